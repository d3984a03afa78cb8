using PureMoE.Nn;

namespace PureMoE.Models;

/// <summary>
/// The Mixtral decoder stack without the output head (Hugging Face MixtralModel): token embedding, the decoder
/// layers, and a final RMSNorm. Token ids [B, S] → hidden states [B, S, d].
/// </summary>
public sealed class MixtralModel : Module
{
    /// <summary>Creates the stack; weights from <paramref name="rng"/> in parameter order; <paramref name="moeFactory"/> builds each MoE sub-layer (default: <see cref="SparseMoeBlock"/>).</summary>
    public MixtralModel(MixtralConfig config, Rng rng, DType dtype = DType.Float32, Device? device = null,
        MoeBlockFactory? moeFactory = null)
    {
        config.Validate();
        Config = config;
        EmbedTokens = RegisterModule("embed_tokens", new Embedding(config.VocabSize, config.HiddenSize, rng,
            config.InitializerRange, dtype, device));
        Layers = RegisterModule("layers", new ModuleList<MixtralBlock>(
            Enumerable.Range(0, config.NumHiddenLayers).Select(i => new MixtralBlock(config, i, rng, dtype, device, moeFactory))));
        Norm = RegisterModule("norm", new RmsNorm(config.HiddenSize, config.RmsNormEps, dtype, device));
    }

    /// <summary>The architecture.</summary>
    public MixtralConfig Config { get; }

    /// <summary>Token embedding [vocab, d].</summary>
    public Embedding EmbedTokens { get; }

    /// <summary>The decoder layers.</summary>
    public ModuleList<MixtralBlock> Layers { get; }

    /// <summary>Final norm.</summary>
    public RmsNorm Norm { get; }

    /// <summary>int64 ids [B, S] → normalised hidden states [B, S, d]. A cache makes the ids follow the cached positions.</summary>
    public Tensor Forward(Tensor inputIds, KvCache? cache = null)
    {
        if (inputIds.Rank != 2 || inputIds.DType != DType.Int64)
            throw new ArgumentException($"MixtralModel: input ids must be int64 [B, S], got {inputIds.DType.Name()} {inputIds.Shape}");
        var h = EmbedTokens.Forward(inputIds);
        foreach (var layer in Layers) h = layer.Forward(h, cache);
        return Norm.Forward(h);
    }
}
