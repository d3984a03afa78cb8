using PureMoE.Nn;

namespace PureMoE.Models;

/// <summary>
/// One Mixtral decoder layer (Hugging Face MixtralDecoderLayer): pre-norm attention and a pre-norm sparse MoE,
/// each added to the residual stream: h = x + attn(norm₁(x)); y = h + moe(norm₂(h)).
/// </summary>
public sealed class MixtralBlock : Module
{
    /// <summary>Creates layer <paramref name="layerIndex"/> of a model with <paramref name="config"/>; weights from <paramref name="rng"/>.</summary>
    /// <remarks>
    /// <paramref name="moeFactory"/> builds the mixture-of-experts sub-layer (default: the plain
    /// <see cref="SparseMoeBlock"/>); PureMoE.Moe passes one that builds its MoeLayer with a chosen router.
    /// </remarks>
    public MixtralBlock(MixtralConfig config, int layerIndex, Rng rng, DType dtype = DType.Float32, Device? device = null,
        MoeBlockFactory? moeFactory = null)
    {
        double std = config.InitializerRange;
        // Registration order = Hugging Face's attribute order, so parameter lists match theirs.
        SelfAttn = RegisterModule("self_attn", new CausalSelfAttention(config.HiddenSize, config.NumAttentionHeads,
            config.NumKeyValueHeads, config.RopeTheta, rng, layerIndex, std, dtype, device));
        var moe = moeFactory is null
            ? new SparseMoeBlock(config.HiddenSize, config.IntermediateSize, config.NumLocalExperts, config.NumExpertsPerTok, rng, std, dtype, device)
            : moeFactory(config, layerIndex, rng, dtype, device);
        if (moe is not IMoeBlock block)
            throw new ArgumentException($"MixtralBlock: the MoE factory built a {moe.GetType().Name}, which does not implement IMoeBlock");
        BlockSparseMoe = RegisterModule("block_sparse_moe", moe);
        Moe = block;
        InputLayerNorm = RegisterModule("input_layernorm", new RmsNorm(config.HiddenSize, config.RmsNormEps, dtype, device));
        PostAttentionLayerNorm = RegisterModule("post_attention_layernorm", new RmsNorm(config.HiddenSize, config.RmsNormEps, dtype, device));
    }

    /// <summary>The attention sub-layer.</summary>
    public CausalSelfAttention SelfAttn { get; }

    /// <summary>The mixture-of-experts sub-layer (registered as block_sparse_moe).</summary>
    public Module BlockSparseMoe { get; }

    /// <summary>The same sub-layer, as the interface the block calls.</summary>
    public IMoeBlock Moe { get; }

    /// <summary>Norm before attention.</summary>
    public RmsNorm InputLayerNorm { get; }

    /// <summary>Norm before the mixture of experts.</summary>
    public RmsNorm PostAttentionLayerNorm { get; }

    /// <summary>x [B, S, d] → [B, S, d].</summary>
    public Tensor Forward(Tensor x, KvCache? cache = null)
    {
        var h = x.Add(SelfAttn.Forward(InputLayerNorm.Forward(x), cache));
        return h.Add(Moe.Forward(PostAttentionLayerNorm.Forward(h)));
    }
}
