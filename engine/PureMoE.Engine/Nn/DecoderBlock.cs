namespace PureMoE.Nn;

/// <summary>
/// A dense pre-norm transformer block (Llama): h = x + attn(norm₁(x)); y = h + mlp(norm₂(h)). Mixtral's block is
/// the same with the MLP replaced by a sparse mixture of experts (<see cref="Models.MixtralBlock"/>).
/// </summary>
public sealed class DecoderBlock : Module
{
    /// <summary>Creates the block; weights from <paramref name="rng"/> in the order attention, MLP.</summary>
    public DecoderBlock(int hiddenSize, int intermediateSize, int numHeads, int numKvHeads, double ropeTheta,
        double rmsNormEps, Rng rng, int layerIndex = 0, double initStd = 0.02, DType dtype = DType.Float32, Device? device = null)
    {
        SelfAttn = RegisterModule("self_attn", new CausalSelfAttention(hiddenSize, numHeads, numKvHeads, ropeTheta, rng,
            layerIndex, initStd, dtype, device));
        Mlp = RegisterModule("mlp", new SwiGluMlp(hiddenSize, intermediateSize, rng, initStd, dtype, device));
        InputLayerNorm = RegisterModule("input_layernorm", new RmsNorm(hiddenSize, rmsNormEps, dtype, device));
        PostAttentionLayerNorm = RegisterModule("post_attention_layernorm", new RmsNorm(hiddenSize, rmsNormEps, dtype, device));
    }

    /// <summary>The attention sub-layer.</summary>
    public CausalSelfAttention SelfAttn { get; }

    /// <summary>The feed-forward sub-layer.</summary>
    public SwiGluMlp Mlp { get; }

    /// <summary>Norm before attention.</summary>
    public RmsNorm InputLayerNorm { get; }

    /// <summary>Norm before the MLP.</summary>
    public RmsNorm PostAttentionLayerNorm { get; }

    /// <summary>x [B, S, d] → [B, S, d].</summary>
    public Tensor Forward(Tensor x, KvCache? cache = null)
    {
        var h = x.Add(SelfAttn.Forward(InputLayerNorm.Forward(x), cache));
        return h.Add(Mlp.Forward(PostAttentionLayerNorm.Forward(h)));
    }
}
