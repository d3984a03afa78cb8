using PureMoE.Backends;

namespace PureMoE;

// Rotary position embedding and causal self-attention with grouped-query heads: block-causal batched GEMMs around
// a causal softmax kernel, forward and backward together.
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
        var dense = RopeLayout.Dense(seq, dim);
        // A [B, H, S, D] view of a projection's [B, S, H, D] output (as attention makes) is read where it lies;
        // other views are made dense first. The output is dense [.., S, D].
        var viewLayout = HeadsView();
        var (xs, xLayout) = viewLayout is { } heads ? (this, heads) : (Dense(), dense);
        var y = Empty(Shape, DType, Device);
        Backend.Rope(xs.Storage, xLayout, c.Storage, s.Storage, y.Storage, dense, outer, seq, dim, inverse: false);
        return Record("Rope", y, [this], g =>
        {
            var gd = g.Dense();
            if (viewLayout is { } layout)
            {
                // The gradient in the input's own layout, [B, S, H, D] seen as [B, H, S, D]: the projection it flows
                // back to then gets it without a transposing copy.
                var buffer = Empty(new Shape(Shape[0], Shape[2], Shape[1], dim), g.DType, g.Device);
                g.Backend.Rope(gd.Storage, dense, c.Storage, s.Storage, buffer.Storage, layout, outer, seq, dim, inverse: true);
                return [buffer.Transpose(1, 2)];
            }
            var dx = Empty(g.Shape, g.DType, g.Device);
            g.Backend.Rope(gd.Storage, dense, c.Storage, s.Storage, dx.Storage, dense, outer, seq, dim, inverse: true);
            return [dx];
        });
    }

    /// <summary>
    /// The layout of this tensor when it is [B, H, S, D] seen through Transpose(1, 2) of a whole contiguous
    /// [B, S, H, D] buffer (the heads of a projection's output); null otherwise.
    /// </summary>
    private RopeLayout? HeadsView()
    {
        if (Rank != 4 || Offset != 0 || Numel == 0) return null;
        int h = Shape[1], seq = Shape[2], d = Shape[3];
        bool transposed = Strides[3] == 1 && Strides[1] == d && Strides[2] == h * d && Strides[0] == seq * h * d;
        return transposed && Storage.Length == Numel ? new RopeLayout(h, seq * h * d, d, h * d) : null;
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
    /// <remarks>
    /// On <see cref="Device.Cpu"/> in float32, from 512 queries (head dimension a multiple of 8), the attention
    /// runs tile by tile and never holds the [S, Sk] scores (FlashAttention-2's method; memory O(S·D)); below that,
    /// and on other devices, as block-causal products around a causal softmax.
    /// </remarks>
    public static Tensor CausalAttention(Tensor q, Tensor k, Tensor v) => CausalAttention(q, k, v, blockRows: 0);

    /// <summary>
    /// <see cref="CausalAttention(Tensor, Tensor, Tensor)"/> with the query rows of each product taken
    /// <paramref name="blockRows"/> at a time (0: <see cref="AttentionBlockRows"/>); tests pass small blocks.
    /// <paramref name="tiled"/>: true or false forces the tiled path (where the device runs it) or the products;
    /// null chooses by the number of queries.
    /// </summary>
    internal static Tensor CausalAttention(Tensor q, Tensor k, Tensor v, int blockRows, bool? tiled = null)
    {
        if (q.Rank != 4 || k.Rank != 4 || v.Rank != 4 || k.Shape != v.Shape)
            throw new ArgumentException($"CausalAttention: needs q [B,H,S,D] and k, v [B,Hkv,Sk,D], got {q.Shape}, {k.Shape}, {v.Shape}");
        int b = q.Shape[0], h = q.Shape[1], s = q.Shape[2], d = q.Shape[3];
        int hkv = k.Shape[1], sk = k.Shape[2];
        if (k.Shape[0] != b || k.Shape[3] != d || hkv == 0 || h % hkv != 0 || sk < s)
            throw new ArgumentException($"CausalAttention: q {q.Shape} and k/v {k.Shape} disagree (batch, head dim, H multiple of Hkv, Sk ≥ S)");
        CheckSameDevice("CausalAttention", q, k);
        CheckSameDevice("CausalAttention", q, v);
        if (k.DType != q.DType || v.DType != q.DType)
            throw new ArgumentException($"CausalAttention: q, k, v are {q.DType.Name()}, {k.DType.Name()}, {v.DType.Name()}; they must match");
        int group = h / hkv;
        // Grouped heads share K and V: fold the group into the query rows, [B, Hkv, group·S, D], so no K/V copies.
        // The 1/√D scale is the alpha of the products that take Q or give dQ: it costs no pass over any tensor.
        var qg = q.Reshape(b, hkv, group * s, d);
        if (CanTile(q, d) && (tiled ?? s >= TiledAttentionMinQueries))
            return CausalAttentionTiled(qg, k, v, s, 1.0 / Math.Sqrt(d)).Reshape(b, h, s, d);
        if ((long)b * hkv * group * s * sk > int.MaxValue)
            throw new ArgumentException($"CausalAttention: q {q.Shape} and k/v {k.Shape} need a [{b * hkv},{(long)group * s},{sk}] score matrix, " +
                $"more than 2^31-1 elements, which {q.DType.Name()} attention on {q.Device} computes whole: use a shorter context or a smaller batch" +
                (CanTile(q, d) ? "" : " (float32 on the CPU, head dimension a multiple of 8, goes tile by tile without it)"));
        int block = blockRows > 0 ? blockRows : AttentionBlockRows(s);
        return CausalAttentionFolded(qg, k, v, s, block, 1.0 / Math.Sqrt(d)).Reshape(b, h, s, d);
    }

    /// <summary>
    /// Query rows per block of the block-causal products: one block (the plain products) below 256 queries, where
    /// the saved products cost less than the extra, smaller GEMM calls (at S = 128, blocks of 32 or 64 were slower);
    /// from 256, blocks of max(128, S/4) rows, so 1/4 to 3/8 of the score matrix (blocks above the diagonal) is never
    /// computed. Measured with `quick attention` (bench/RESULTS.md): S = 256 −28 %, S = 512 −20 to −35 %.
    /// </summary>
    internal static int AttentionBlockRows(int queries) => queries < 256 ? queries : Math.Max(128, (queries + 3) / 4);

    // softmax(scale·Q·Kᵀ)·V with the causal mask, on folded heads: qg [B, Hkv, R = group·S, D], k and v
    // [B, Hkv, Sk, D]. Row r is query position o + (r mod S), o = Sk − S, and sees keys j ≤ o + (r mod S). The
    // scale is the alpha of the products through Q: scores, dQ = scale·dS·K and dK = scale·dSᵀ·Q.
    //
    // Block-causal: the rows go in blocks of `block` queries; a block whose last query sits at position p only
    // needs keys [0, p], so its products stop there. Scores and dP right of a block's keys are never computed or
    // read: the causal softmax and its backward read only the unmasked columns and write 0 to the masked ones,
    // so P and dS are whole. The key-side products (dK = dSᵀ·Q, dV = Pᵀ·dO) go by key blocks: only queries at or
    // after a block's first key can see it, so each reads the rows from there on, one product per head group.
    private static Tensor CausalAttentionFolded(Tensor qg, Tensor k, Tensor v, int s, int block, double scale)
    {
        int b = qg.Shape[0], hkv = qg.Shape[1], rows = qg.Shape[2], d = qg.Shape[3], sk = k.Shape[2];
        int bh = b * hkv, o = sk - s;
        var (dtype, device, backend) = (qg.DType, qg.Device, qg.Backend);
        Tensor q = qg.Dense();
        // K and V are read where they lie when each head's rows are contiguous and the heads evenly spaced (a KV
        // cache's [B, Hkv, capacity, D] buffer narrowed to the cached positions); otherwise from a dense copy.
        var kd = HeadRows(k, bh, sk, d);
        var vd = HeadRows(v, bh, sk, d);
        var rowBlocks = CausalRowBlocks(rows, s, sk, block);

        // C[r0.., :n] = alpha·op(A)[r0.., ..]·op(B) per row block, batched over the B·Hkv heads.
        void PerRowBlock(double alpha, bool transB, Tensor a, int lda, HeadRowsView bm, Tensor c, int ldc, bool keysAreN)
        {
            foreach (var (r0, m, n) in rowBlocks)
            {
                int cols = keysAreN ? n : d, inner = keysAreN ? d : n;
                backend.Gemm(false, transB, m, cols, inner, alpha, a.Storage, r0 * lda, lda, rows * lda,
                    bm.Storage, bm.Offset, d, bm.HeadStride, 0.0, c.Storage, r0 * ldc, ldc, rows * ldc, bh);
            }
        }

        var scores = Empty(new Shape(bh, rows, sk), dtype, device);
        PerRowBlock(scale, transB: true, q, d, kd, scores, sk, keysAreN: true);          // scores = scale·Q·Kᵀ
        var p = Empty(scores.Shape, dtype, device);
        backend.Softmax(scores.Storage, p.Storage, bh * rows, sk, log: false, causalQuery: s);
        scores.Recycle();   // read by nothing from here: the next layer's scores can take its array
        var y = Empty(qg.Shape, dtype, device);
        PerRowBlock(1.0, transB: false, p, sk, vd, y, d, keysAreN: false);                // Y = P·V

        return Record("CausalAttention", y, [qg, k, v], g =>
        {
            var dy = g.Dense();
            Tensor? dq = null, dk = null, dv = null;
            if (qg.RequiresGrad || k.RequiresGrad)
            {
                var dp = Empty(p.Shape, dtype, device);
                PerRowBlock(1.0, transB: true, dy, d, vd, dp, sk, keysAreN: true);        // dP = dY·Vᵀ
                var ds = Empty(p.Shape, dtype, device);
                backend.SoftmaxBackward(p.Storage, dp.Storage, ds.Storage, bh * rows, sk, log: false, causalQuery: s);
                if (qg.RequiresGrad)
                {
                    dq = Empty(qg.Shape, dtype, device);
                    PerRowBlock(scale, transB: false, ds, sk, kd, dq, d, keysAreN: false); // dQ = scale·dS·K
                }
                if (k.RequiresGrad) dk = KeyBlockProducts(scale, ds, q, k.Shape);         // dK = scale·dSᵀ·Q
            }
            if (v.RequiresGrad) dv = KeyBlockProducts(1.0, p, dy, v.Shape);               // dV = Pᵀ·dY
            return [dq?.AsFreshGradient(), dk?.AsFreshGradient(), dv?.AsFreshGradient()];
        }, saved: ReferenceEquals(q.Storage, qg.Storage) ? [p] : [p, q]);   // P, and Q where it is a dense copy

        // Σ over the rows that can see each key: C[j0.., :] = alpha·Σ_groups A[rows from the first that sees j0.., j0..]ᵀ·B[same rows].
        Tensor KeyBlockProducts(double alpha, Tensor a, Tensor bm, Shape shape)
        {
            var c = Empty(shape, dtype, device);
            int group = rows / Math.Max(s, 1);
            for (int j0 = 0; j0 < sk; j0 += block)
            {
                int mk = Math.Min(block, sk - j0), first = Math.Max(0, j0 - o), count = s - first;
                for (int gi = 0; gi < group; gi++)
                {
                    int r0 = gi * s + first;
                    backend.Gemm(true, false, mk, d, count, alpha, a.Storage, r0 * sk + j0, sk, rows * sk,
                        bm.Storage, r0 * d, d, rows * d, gi == 0 ? 0.0 : 1.0, c.Storage, j0 * d, d, sk * d, bh);
                }
            }
            return c;
        }
    }

    // K or V [B, Hkv, Sk, D] as the GEMMs read it: bh heads of Sk rows of D contiguous floats, head i at
    // Offset + i·HeadStride. A dense tensor has HeadStride Sk·D; a KV cache's view has capacity·D.
    private readonly record struct HeadRowsView(Backends.Storage Storage, int Offset, int HeadStride);

    private static HeadRowsView HeadRows(Tensor x, int bh, int sk, int d)
    {
        var st = x.Strides;
        bool rowsInPlace = (d == 1 || st[3] == 1) && (sk == 1 || st[2] == d)
            && (x.Shape[0] == 1 || x.Shape[1] == 1 || st[0] == x.Shape[1] * st[1]);
        if (!rowsInPlace || bh == 0)
        {
            var dense = x.Dense();
            return new(dense.Storage, 0, sk * d);
        }
        // Heads evenly spaced: with one of B, Hkv equal to 1 the other's stride is the spacing.
        int headStride = x.Shape[1] > 1 ? st[1] : st[0];
        return new(x.Storage, x.Offset, bh == 1 ? sk * d : headStride);
    }

    // The row blocks (first row, rows, keys needed) of the block-causal products: within each head group's S query
    // rows, blocks of `block` queries; a block ending at query i needs keys [0, o + i]. One block of all rows when
    // a block covers S (the plain products).
    private static List<(int R0, int M, int N)> CausalRowBlocks(int rows, int s, int sk, int block)
    {
        if (block >= s) return [(0, rows, sk)];
        var blocks = new List<(int, int, int)>();
        for (int g0 = 0; g0 < rows; g0 += s)
            for (int i0 = 0; i0 < s; i0 += block)
            {
                int m = Math.Min(block, s - i0);
                blocks.Add((g0 + i0, m, sk - s + i0 + m));
            }
        return blocks;
    }
}
