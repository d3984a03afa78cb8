namespace PureMoE.Nn;

/// <summary>
/// Multi-head causal self-attention with grouped-query heads and rotary position embeddings, as in Llama and
/// Mixtral: q_proj, k_proj, v_proj, o_proj without biases; head_dim = hidden / heads; query head h reads
/// key/value head h / (heads / kv_heads). Input and output [B, S, hidden].
/// </summary>
public sealed class CausalSelfAttention : Module
{
    /// <summary>
    /// Creates the layer. <paramref name="layerIndex"/> is its slot in a <see cref="KvCache"/>. Weights are
    /// Normal(0, initStd²) from <paramref name="rng"/> in the order q, k, v, o.
    /// </summary>
    public CausalSelfAttention(int hiddenSize, int numHeads, int numKvHeads, double ropeTheta, Rng rng,
        int layerIndex = 0, double initStd = 0.02, DType dtype = DType.Float32, Device? device = null)
    {
        if (numHeads <= 0 || hiddenSize % numHeads != 0)
            throw new ArgumentException($"CausalSelfAttention: hidden size {hiddenSize} is not divisible by {numHeads} heads");
        if (numKvHeads <= 0 || numHeads % numKvHeads != 0)
            throw new ArgumentException($"CausalSelfAttention: {numHeads} heads are not divisible by {numKvHeads} key/value heads");
        HiddenSize = hiddenSize;
        NumHeads = numHeads;
        NumKvHeads = numKvHeads;
        HeadDim = hiddenSize / numHeads;
        if (HeadDim % 2 != 0)
            throw new ArgumentException($"CausalSelfAttention: head dimension {HeadDim} must be even for rotary embeddings");
        RopeTheta = ropeTheta;
        LayerIndex = layerIndex;
        int kvSize = numKvHeads * HeadDim;
        QProj = RegisterModule("q_proj", new Linear(hiddenSize, hiddenSize, rng, bias: false, initStd, dtype, device));
        KProj = RegisterModule("k_proj", new Linear(hiddenSize, kvSize, rng, bias: false, initStd, dtype, device));
        VProj = RegisterModule("v_proj", new Linear(hiddenSize, kvSize, rng, bias: false, initStd, dtype, device));
        OProj = RegisterModule("o_proj", new Linear(hiddenSize, hiddenSize, rng, bias: false, initStd, dtype, device));
    }

    /// <summary>Model width.</summary>
    public int HiddenSize { get; }

    /// <summary>Query heads.</summary>
    public int NumHeads { get; }

    /// <summary>Key/value heads (divides <see cref="NumHeads"/>).</summary>
    public int NumKvHeads { get; }

    /// <summary>Size of one head.</summary>
    public int HeadDim { get; }

    /// <summary>RoPE base θ.</summary>
    public double RopeTheta { get; }

    /// <summary>This layer's slot in a <see cref="KvCache"/>.</summary>
    public int LayerIndex { get; }

    /// <summary>Query projection [hidden, hidden].</summary>
    public Linear QProj { get; }

    /// <summary>Key projection [kv_heads·head_dim, hidden].</summary>
    public Linear KProj { get; }

    /// <summary>Value projection [kv_heads·head_dim, hidden].</summary>
    public Linear VProj { get; }

    /// <summary>Output projection [hidden, hidden].</summary>
    public Linear OProj { get; }

    /// <summary>
    /// x [B, S, hidden] → [B, S, hidden]. With a <paramref name="cache"/>, x holds the positions after those
    /// already cached: they are rotated from that offset and attend to the cached keys too.
    /// </summary>
    public Tensor Forward(Tensor x, KvCache? cache = null)
    {
        if (x.Rank != 3 || x.Shape[2] != HiddenSize)
            throw new ArgumentException($"CausalSelfAttention: input must be [B, S, {HiddenSize}], got {x.Shape}");
        int b = x.Shape[0], s = x.Shape[1];
        int start = cache?.Length(LayerIndex) ?? 0;

        // [B, S, heads·D] → [B, heads, S, D]: attention runs per head over the sequence.
        var q = QProj.Forward(x).Reshape(b, s, NumHeads, HeadDim).Transpose(1, 2);
        var k = KProj.Forward(x).Reshape(b, s, NumKvHeads, HeadDim).Transpose(1, 2);
        var v = VProj.Forward(x).Reshape(b, s, NumKvHeads, HeadDim).Transpose(1, 2);

        // Positions start after the cached ones, so a token gets the same rotation whether or not it was cached.
        var (cos, sin) = Tensor.RopeTables(s, HeadDim, RopeTheta, start, x.DType, x.Device);
        q = q.Rope(cos, sin);
        k = k.Rope(cos, sin);
        if (cache is not null) (k, v) = cache.Update(LayerIndex, k, v);

        var attn = Tensor.CausalAttention(q, k, v);            // [B, heads, S, D]
        var merged = attn.Transpose(1, 2).Reshape(b, s, HiddenSize);
        return OProj.Forward(merged);
    }
}
