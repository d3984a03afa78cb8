using PureMoE.Autograd;
using PureMoE.Nn;

namespace PureMoE.Models;

/// <summary>
/// A Mixtral language model (Hugging Face MixtralForCausalLM): the decoder stack "model" and the output
/// projection "lm_head" [vocab, d]. Parameter names are exactly Hugging Face's, so its safetensors checkpoints
/// load with <see cref="Module.LoadStateDict(IReadOnlyDictionary{string, Tensor}, bool)"/>.
/// </summary>
public sealed class MixtralForCausalLM : Module
{
    /// <summary>
    /// Creates the model with random weights from a seeded <paramref name="rng"/> (Normal(0, initializer_range²)
    /// linear and embedding weights, RMSNorm weights one), in <paramref name="dtype"/> on <paramref name="device"/>.
    /// </summary>
    /// <remarks><paramref name="moeFactory"/> builds each MoE sub-layer (default: the plain <see cref="SparseMoeBlock"/>).</remarks>
    public MixtralForCausalLM(MixtralConfig config, Rng rng, DType dtype = DType.Float32, Device? device = null,
        MoeBlockFactory? moeFactory = null)
    {
        Config = config;
        Model = RegisterModule("model", new MixtralModel(config, rng, dtype, device, moeFactory));
        // Tied embeddings: lm_head reuses embed_tokens.weight, so it is not a parameter of its own (as in
        // PyTorch's named_parameters, which lists a shared tensor once).
        if (!config.TieWordEmbeddings)
            LmHead = RegisterModule("lm_head", new Linear(config.HiddenSize, config.VocabSize, rng, bias: false,
                config.InitializerRange, dtype, device));
    }

    /// <summary>The architecture.</summary>
    public MixtralConfig Config { get; }

    /// <summary>The decoder stack.</summary>
    public MixtralModel Model { get; }

    /// <summary>The output projection, or null with tied embeddings.</summary>
    public Linear? LmHead { get; }

    /// <summary>int64 ids [B, S] → logits [B, S, vocab]. With a cache, only the new positions are computed.</summary>
    public Tensor Forward(Tensor inputIds, KvCache? cache = null) => Project(Model.Forward(inputIds, cache));

    /// <summary>Hidden states [.., d] → logits [.., vocab]: lm_head, or the embedding matrix when tied.</summary>
    private Tensor Project(Tensor hidden) =>
        LmHead is Linear head ? head.Forward(hidden) : hidden.MatMul(Model.EmbedTokens.Weight.T);

    /// <summary>
    /// Mean next-token cross-entropy of a batch of sequences [B, S]: the logits at positions 0 … S−2 predict the
    /// ids at 1 … S−1.
    /// </summary>
    public Tensor Loss(Tensor inputIds)
    {
        int s = inputIds.Size(1);
        if (s < 2) throw new ArgumentException($"Loss: sequences need at least 2 tokens, got {inputIds.Shape}");
        // The last position predicts nothing: leaving it out of the hidden states (d wide) rather than the logits
        // (vocab wide) spares computing its logits, and copying and padding the rest (vocab/d times the data).
        var hidden = Model.Forward(inputIds).Narrow(1, 0, s - 1);
        var targets = inputIds.Narrow(1, 1, s - 1);
        // Large logits on the host (a BPE vocabulary): the output layer and the loss as one op in blocks of rows, so
        // the [rows, vocab] logits and their gradient are never held whole. Small ones keep the plain path.
        var weight = LmHead is Linear head ? (head.HasBias ? null : head.Weight) : Model.EmbedTokens.Weight;
        if (weight is not null && hidden.Device.IsHost &&
            (long)targets.Numel * Config.VocabSize > Tensor.LinearCrossEntropyBlockElements)
            return hidden.LinearCrossEntropy(weight, targets);
        return Project(hidden).CrossEntropy(targets);
    }

    /// <summary>Mean next-token cross-entropy of logits [B, S, V] for ids [B, S]: position i predicts id i+1.</summary>
    public static Tensor NextTokenLoss(Tensor logits, Tensor inputIds)
    {
        int s = inputIds.Size(1);
        if (s < 2) throw new ArgumentException($"NextTokenLoss: sequences need at least 2 tokens, got {inputIds.Shape}");
        return logits.Narrow(1, 0, s - 1).CrossEntropy(inputIds.Narrow(1, 1, s - 1));
    }

    /// <summary>
    /// The sum over layers of the routers' regularisers (aux, z, sparsity losses) of the last forward, or null when
    /// none were computed: add it to the training loss.
    /// </summary>
    public Tensor? RegularizationLoss()
    {
        Tensor? total = null;
        foreach (var layer in Model.Layers)
            if (layer.Moe.LastRegularizationLoss is Tensor l) total = total is null ? l : total.Add(l);
        return total;
    }

    /// <summary>A fresh key/value cache sized for this model.</summary>
    public KvCache NewCache() => new(Config.NumHiddenLayers);

    /// <summary>
    /// Extends each prompt in <paramref name="inputIds"/> [B, S] by <paramref name="maxNewTokens"/> sampled tokens
    /// and returns [B, S + maxNewTokens]. Temperature ≤ 0 picks the most likely token; otherwise tokens are drawn
    /// from softmax(logits / temperature) restricted to the smallest set whose probability reaches
    /// <paramref name="topP"/> (nucleus sampling). Uses a KV cache; deterministic for a given <paramref name="rng"/> state.
    /// </summary>
    public Tensor Generate(Tensor inputIds, int maxNewTokens, double temperature, double topP, Rng rng)
    {
        if (inputIds.Rank != 2 || inputIds.Size(1) == 0)
            throw new ArgumentException($"Generate: prompt ids must be [B, S] with S ≥ 1, got {inputIds.Shape}");
        int batch = inputIds.Size(0);
        var rows = Enumerable.Range(0, batch).Select(b => inputIds.Narrow(0, b, 1).ToLongArray().ToList()).ToList();
        foreach (long[] picked in Steps(inputIds, maxNewTokens, temperature, topP, rng))
            for (int b = 0; b < batch; b++) rows[b].Add(picked[b]);
        return Tensor.FromHost(rows.SelectMany(r => r).ToArray(), [batch, rows[0].Count], inputIds.Device);
    }

    /// <summary>
    /// <see cref="Generate"/> for one prompt [1, S], one token at a time: each new token is yielded as soon as it is
    /// sampled (the same tokens as <see cref="Generate"/> for the same <paramref name="rng"/> state), so a caller can
    /// show text as it comes and stop early (at an end-of-text token, say) without computing the rest.
    /// </summary>
    public IEnumerable<long> GenerateTokens(Tensor promptIds, int maxNewTokens, double temperature, double topP, Rng rng)
    {
        if (promptIds.Rank != 2 || promptIds.Size(0) != 1 || promptIds.Size(1) == 0)
            throw new ArgumentException($"GenerateTokens: prompt ids must be [1, S] with S ≥ 1, got {promptIds.Shape}");
        return Steps(promptIds, maxNewTokens, temperature, topP, rng).Select(picked => picked[0]);
    }

    // The decoding loop of Generate and GenerateTokens: each step runs the new positions through the KV cache and
    // yields the token sampled for each row (gradients off within a step only, so nothing leaks to the caller between
    // steps).
    private IEnumerable<long[]> Steps(Tensor inputIds, int maxNewTokens, double temperature, double topP, Rng rng)
    {
        int batch = inputIds.Size(0);
        var cache = NewCache();
        var next = inputIds;
        for (int step = 0; step < maxNewTokens; step++)
        {
            var picked = new long[batch];
            using (GradMode.NoGrad())
            {
                var logits = Forward(next, cache);                                  // [B, S_new, V]
                var last = logits.Narrow(1, logits.Size(1) - 1, 1).ToDoubleArray();   // [B, 1, V] on the host
                int vocab = logits.Size(2);
                for (int b = 0; b < batch; b++) picked[b] = Sampling.Sample(last.AsSpan(b * vocab, vocab), temperature, topP, rng);
            }
            yield return picked;
            next = Tensor.FromHost(picked, [batch, 1], inputIds.Device);
        }
    }
}
