namespace PureMoE;

// Rotary position embedding and causal self-attention with grouped-query heads, composed from batched GEMMs and
// a causal softmax kernel.
public sealed partial class Tensor
{
    /// <summary>
    /// Rotary position embedding (rotate-half convention of Hugging Face Llama/Mixtral) on x [..., seq, dim] with
    /// cos/sin tables [seq, dim/2]. The backward rotates the gradient by −θ.
    /// </summary>
    public Tensor Rope(Tensor cos, Tensor sin)
    {
        if (Rank < 2) throw new ArgumentException($"Rope: input needs [..., seq, dim], got {Shape}");
        int seq = Shape[-2], dim = Shape[-1];
        if (dim % 2 != 0) throw new ArgumentException($"Rope: head dimension {dim} of {Shape} must be even");
        if (cos.Shape != new Shape(seq, dim / 2) || sin.Shape != cos.Shape)
            throw new ArgumentException($"Rope: input {Shape} needs cos/sin tables [{seq},{dim / 2}], got {cos.Shape} and {sin.Shape}");
        CheckSameDevice("Rope", this, cos);
        CheckSameDevice("Rope", this, sin);
        if (cos.DType != DType || sin.DType != DType)
            throw new ArgumentException($"Rope: input {Shape} is {DType.Name()} but the cos/sin tables are {cos.DType.Name()}/{sin.DType.Name()}");
        int outer = seq * dim == 0 ? 0 : Numel / (seq * dim);
        var c = cos.Dense();
        var s = sin.Dense();
        var y = Empty(Shape, DType, Device);
        Backend.Rope(Dense().Storage, c.Storage, s.Storage, y.Storage, outer, seq, dim, inverse: false);
        return Record("Rope", y, [this], g =>
        {
            var dx = Empty(g.Shape, g.DType, g.Device);
            g.Backend.Rope(g.Dense().Storage, c.Storage, s.Storage, dx.Storage, outer, seq, dim, inverse: true);
            return [dx];
        });
    }

    /// <summary>
    /// The cos/sin tables [seq, dim/2] of rotary embeddings: θ_j = base^(−2j/dim), angle = position · θ_j,
    /// positions start at <paramref name="start"/>.
    /// </summary>
    public static (Tensor Cos, Tensor Sin) RopeTables(int seq, int dim, double theta, int start = 0,
        DType dtype = DType.Float32, Device? device = null)
    {
        int half = dim / 2;
        var cos = new double[seq * half];
        var sin = new double[seq * half];
        for (int p = 0; p < seq; p++)
            for (int j = 0; j < half; j++)
            {
                // Frequencies computed as float32, like Hugging Face (inv_freq is a float32 tensor there).
                double invFreq = (float)(1.0 / Math.Pow(theta, 2.0 * j / dim));
                double angle = (start + p) * invFreq;
                cos[p * half + j] = Math.Cos(angle);
                sin[p * half + j] = Math.Sin(angle);
            }
        // Converted on the host, then uploaded: ILGPU devices hold no float64.
        var d = device ?? Device.Cpu;
        return (FromHost(cos, [seq, half], Device.Cpu).To(dtype).To(d), FromHost(sin, [seq, half], Device.Cpu).To(dtype).To(d));
    }

    /// <summary>
    /// Causal scaled dot-product attention with grouped-query heads: q [B, H, S, D], k and v [B, Hkv, Sk, D] with
    /// H a multiple of Hkv (query head h reads kv head h / (H/Hkv), as Hugging Face's repeat_kv). Sk ≥ S: the
    /// queries are the last S positions (a KV cache). Returns [B, H, S, D].
    /// </summary>
    public static Tensor CausalAttention(Tensor q, Tensor k, Tensor v)
    {
        if (q.Rank != 4 || k.Rank != 4 || v.Rank != 4 || k.Shape != v.Shape)
            throw new ArgumentException($"CausalAttention: needs q [B,H,S,D] and k, v [B,Hkv,Sk,D], got {q.Shape}, {k.Shape}, {v.Shape}");
        int b = q.Shape[0], h = q.Shape[1], s = q.Shape[2], d = q.Shape[3];
        int hkv = k.Shape[1], sk = k.Shape[2];
        if (k.Shape[0] != b || k.Shape[3] != d || hkv == 0 || h % hkv != 0 || sk < s)
            throw new ArgumentException($"CausalAttention: q {q.Shape} and k/v {k.Shape} disagree (batch, head dim, H multiple of Hkv, Sk ≥ S)");
        int group = h / hkv;
        // Grouped heads share K and V: fold the group into the query rows, [B, Hkv, group·S, D], so no K/V copies.
        // The 1/√D scale goes on the queries, not the scores: [.., S, D] is D/Sk the size of [.., S, Sk].
        var qg = q.Reshape(b, hkv, group * s, d).MulScalar(1.0 / Math.Sqrt(d));
        var scores = qg.MatMul(k.T);
        var p = scores.CausalSoftmax(s);
        return p.MatMul(v).Reshape(b, h, s, d);
    }
}
