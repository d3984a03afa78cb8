using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PureMoE.Backends.Cpu;

/// <summary>
/// Causal attention in float32 that never holds a [queries, keys] matrix: FlashAttention-2's tiling (Dao, 2023) on
/// the CPU. Queries go in blocks of <see cref="QueryBlock"/> rows and keys in blocks of <see cref="KeyBlock"/>; a
/// block of scores lives in a 16 KB scratch tile, and the forward's softmax runs online (a running row maximum and
/// sum rescale what has been added so far). Besides the output the forward leaves only each row's log-sum-exp; the
/// backward computes each block of scores again from it (with the scaled queries and the transposed K the op keeps).
/// Memory: O(rows · D) throughout, the backward's slots included, instead of the products' O(rows · keys), so long
/// contexts fit.
/// </summary>
/// <remarks>
/// Deterministic and independent of the thread count: no two threads add into one element. FlashAttention-2's
/// backward adds into dQ atomically from one task per key block; here the key blocks go one after another, and
/// within one, a task per query block adds its dS·K into its own rows of dQ and writes its Pᵀ·dY and dSᵀ·Q into
/// its own slot, which a second step sums, per head, in query order into the key block's dV and dK. K and V are
/// read through transposed copies made once per call (O(Sk · D)): each key block's D × KeyBlock panel lies
/// contiguous, so no tile packs it again and its rows are not a power-of-two stride apart (which would map them all
/// to the same few cache sets).
/// </remarks>
internal static unsafe class FlashAttention
{
    /// <summary>Query rows per tile.</summary>
    public const int QueryBlock = 64;

    /// <summary>Keys per tile.</summary>
    public const int KeyBlock = 64;

    /// <summary>Whether this machine runs the kernels (8-lane FMA) for a head dimension of <paramref name="d"/> (a multiple of 8).</summary>
    public static bool Supported(int d) => Vector256.IsHardwareAccelerated && Fma.IsSupported && d > 0 && d % 8 == 0;

    /// <summary>
    /// One attention problem on folded heads. <see cref="Q"/> holds the queries already multiplied by the softmax's
    /// scale (1/√D: so no tile scales its scores), [Heads, Rows, D] dense like the output and its gradient, with
    /// Rows = group·S: row r is query position Sk − S + (r mod S) and sees keys 0 … that position. K and V are Heads
    /// heads of Sk rows of D floats, head h at Offset + h·HeadStride (a KV cache's buffer is read in place).
    /// </summary>
    public readonly record struct Problem(int Heads, int Rows, int S, int Sk, int D,
        float[] Q, float[] K, int KOffset, int KHeadStride, float[] V, int VOffset, int VHeadStride)
    {
        public int Group => Rows / S;
        public int Offset => Sk - S;
        public int QueryBlocks => (S + QueryBlock - 1) / QueryBlock;
        public int KeyBlocks => (Sk + KeyBlock - 1) / KeyBlock;

        /// <summary>Length of a transposed K or V: [Heads, KeyBlocks, D, KeyBlock] panels.</summary>
        public int TransposedLength => Heads * KeyBlocks * D * KeyBlock;

        /// <summary>Offset of head <paramref name="head"/>'s panel of key block <paramref name="kb"/> in a transposed K or V.</summary>
        public int PanelOffset(int head, int kb) => (head * KeyBlocks + kb) * D * KeyBlock;

        /// <summary>Length of the backward's slots for dK or dV: a KeyBlock × D tile per query block of every head.</summary>
        public int SlotsLength => Heads * Group * QueryBlocks * KeyBlock * D;
    }

    // Tiles a task works in: probabilities and their gradient (QueryBlock × KeyBlock), an accumulator of
    // QueryBlock × D, and the running row maximum and sum.
    private sealed class Scratch(int d)
    {
        public readonly float[] P = new float[QueryBlock * KeyBlock];
        public readonly float[] DP = new float[QueryBlock * KeyBlock];
        public readonly float[] Acc = new float[QueryBlock * d];
        public readonly float[] RowMax = new float[QueryBlock];
        public readonly float[] RowSum = new float[QueryBlock];
    }

    // Runs body(task, scratch) for every task, in parallel when there is more than one; each worker has its scratch.
    private static void ForEachTask(int tasks, int d, Action<int, Scratch> body)
    {
        if (tasks <= 0) return;
        if (tasks == 1 || Par.Workers == 1)
        {
            var scratch = new Scratch(d);
            for (int t = 0; t < tasks; t++) body(t, scratch);
            return;
        }
        Parallel.For(0, tasks, () => new Scratch(d), (t, _, scratch) => { body(t, scratch); return scratch; }, _ => { });
    }

    /// <summary>
    /// Writes K (or V) of <paramref name="p"/> transposed into <paramref name="kT"/> as panels: head h's key block b is
    /// D × KeyBlock at <see cref="Problem.PanelOffset"/>, element (t, j) = key b·KeyBlock + j's element t, zero past Sk.
    /// </summary>
    public static void Transpose(Problem p, float[] k, int offset, int headStride, float[] kT)
    {
        int d = p.D;
        Par.For(p.Heads * p.KeyBlocks, (long)d * KeyBlock, (start, end) =>
        {
            for (int hb = start; hb < end; hb++)
            {
                int head = hb / p.KeyBlocks, j0 = hb % p.KeyBlocks * KeyBlock, n = Math.Min(KeyBlock, p.Sk - j0);
                int src = offset + head * headStride + j0 * d;
                var panel = kT.AsSpan(p.PanelOffset(head, hb % p.KeyBlocks), d * KeyBlock);
                for (int t = 0; t < d; t++)
                {
                    var row = panel.Slice(t * KeyBlock, KeyBlock);
                    for (int j = 0; j < n; j++) row[j] = k[src + j * d + t];
                    row[n..].Clear();
                }
            }
        });
    }

    /// <summary>
    /// y = softmax(scale·Q·Kᵀ, causal)·V into <paramref name="y"/> ([Heads, Rows, D]) and each row's log-sum-exp of
    /// its scaled scores into <paramref name="lse"/> ([Heads, Rows]), which the backward needs. <paramref name="kT"/>:
    /// K transposed by <see cref="Transpose"/>.
    /// </summary>
    public static void Forward(Problem p, float[] kT, float[] y, float[] lse)
    {
        int tasks = p.Heads * p.Group * p.QueryBlocks;
        ForEachTask(tasks, p.D, (task, s) => ForwardBlock(p, task, s, kT, y, lse));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardBlock(in Problem p, int task, Scratch s, float[] kT, float[] y, float[] lse)
    {
        int d = p.D, qb = task % p.QueryBlocks, hg = task / p.QueryBlocks, head = hg / p.Group;
        int i0 = qb * QueryBlock, m = Math.Min(QueryBlock, p.S - i0);
        int row0 = hg * p.S + i0;   // = head·Rows + (hg mod group)·S + i0
        int keysEnd = p.Offset + i0 + m;
        s.RowMax.AsSpan(0, m).Fill(float.NegativeInfinity);
        s.RowSum.AsSpan(0, m).Clear();
        s.Acc.AsSpan(0, m * d).Clear();
        fixed (float* q = p.Q, v = p.V, kt = kT, pt = s.P, acc = s.Acc, rowMax = s.RowMax, rowSum = s.RowSum, yp = y)
        {
            float* qBlock = q + (nint)row0 * d;
            float* vHead = v + p.VOffset + (nint)head * p.VHeadStride;
            for (int j0 = 0; j0 < keysEnd; j0 += KeyBlock)
            {
                int n = Math.Min(KeyBlock, keysEnd - j0), cols = (n + 7) / 8 * 8;
                Product(qBlock, d, 1, m, d, kt + p.PanelOffset(head, j0 / KeyBlock), KeyBlock, cols, pt, KeyBlock, accumulate: false);  // Q·Kᵀ
                for (int i = 0; i < m; i++)
                {
                    float* row = pt + i * KeyBlock;
                    int visible = Math.Min(n, p.Offset + i0 + i + 1 - j0);
                    if (visible <= 0)
                    {
                        new Span<float>(row, n).Clear();
                        continue;
                    }
                    float blockMax = Max(row, visible);
                    float newMax = Math.Max(rowMax[i], blockMax);
                    float correction = MathF.Exp(rowMax[i] - newMax);   // 0 on the first block (−∞)
                    float blockSum = ExpMinus(row, visible, newMax);
                    if (visible < n) new Span<float>(row + visible, n - visible).Clear();
                    rowSum[i] = rowSum[i] * correction + blockSum;
                    rowMax[i] = newMax;
                    if (correction != 1f) ScaleRow(acc + i * d, d, correction);
                }
                Product(pt, KeyBlock, 1, m, n, vHead + (nint)j0 * d, d, d, acc, d, accumulate: true);      // += P·V
            }
            for (int i = 0; i < m; i++)
            {
                float* src = acc + i * d, dst = yp + (nint)(row0 + i) * d;
                float sum = rowSum[i];
                for (int t = 0; t < d; t++) dst[t] = src[t] / sum;
                lse[row0 + i] = rowMax[i] + MathF.Log(sum);
            }
        }
    }

    /// <summary>
    /// The gradients of <see cref="Forward"/> from dY (<paramref name="dy"/>, [Heads, Rows, D]), its output
    /// <paramref name="y"/> and <paramref name="lse"/>: that of the scaled queries <see cref="Problem.Q"/> (dS·K; times
    /// the scale, the queries' own) into <paramref name="dq"/> ([Heads, Rows, D]), dK and dV
    /// into <paramref name="dk"/>, <paramref name="dv"/> ([Heads, Sk, D] dense); a null one is not computed.
    /// <paramref name="kT"/>, <paramref name="vT"/>: K and V transposed (<see cref="Transpose"/>);
    /// <paramref name="slotsK"/>, <paramref name="slotsV"/>: workspaces of <see cref="Problem.SlotsLength"/>.
    /// </summary>
    public static void Backward(Problem p, float[] kT, float[] vT, float[] y, float[] lse, float[] dy,
        float[]? dq, float[]? dk, float[]? dv, float[] slotsK, float[] slotsV)
    {
        // δ_r = Σ_t dY[r, t]·Y[r, t] = Σ_j P[r, j]·dP[r, j], so dS = P ∘ (dP − δ) needs no pass over a row's keys.
        var delta = new float[p.Heads * p.Rows];
        Par.For(p.Heads * p.Rows, p.D, (start, end) =>
        {
            for (int r = start; r < end; r++)
                delta[r] = Simd.Dot(dy.AsSpan(r * p.D, p.D), y.AsSpan(r * p.D, p.D));
        });
        dq?.AsSpan(0, p.Heads * p.Rows * p.D).Clear();
        int perHead = p.Group * p.QueryBlocks;
        for (int kb = 0; kb < p.KeyBlocks; kb++)
        {
            int j0 = kb * KeyBlock, n = Math.Min(KeyBlock, p.Sk - j0);
            // The first query that sees key j0 is at position j0: row j0 − Offset of each group's S rows.
            int firstBlock = Math.Max(0, j0 - p.Offset) / QueryBlock, blocks = p.QueryBlocks - firstBlock;
            ForEachTask(p.Heads * p.Group * blocks, p.D, (task, s) =>
            {
                int hg = task / blocks, qb = firstBlock + task % blocks;
                PairGradients(p, hg, qb, j0, n, s, kT, vT, lse, delta, dy, dq, dk is null ? null : slotsK, dv is null ? null : slotsV);
            });
            if (dk is null && dv is null) continue;
            // dK and dV of the key block: each head's slots summed in query order.
            Par.For(p.Heads, (long)perHead * n * p.D, (start, end) =>
            {
                for (int head = start; head < end; head++)
                {
                    int outOffset = (head * p.Sk + j0) * p.D;
                    if (dk is not null) SumSlots(slotsK, head, perHead, firstBlock, p, n, dk.AsSpan(outOffset, n * p.D));
                    if (dv is not null) SumSlots(slotsV, head, perHead, firstBlock, p, n, dv.AsSpan(outOffset, n * p.D));
                }
            });
        }
    }

    // out = Σ over the head's slots (group by group, query block by query block from firstBlock) of their n × D tiles.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SumSlots(float[] slots, int head, int perHead, int firstBlock, in Problem p, int n, Span<float> output)
    {
        int tile = KeyBlock * p.D;
        bool first = true;
        for (int gi = 0; gi < p.Group; gi++)
            for (int qb = firstBlock; qb < p.QueryBlocks; qb++)
            {
                var slot = slots.AsSpan((head * perHead + gi * p.QueryBlocks + qb) * tile, n * p.D);
                if (first) slot.CopyTo(output);
                else
                    for (int e = 0; e < output.Length; e += 8)   // n·D, a multiple of 8
                        (Vector256.Create(output[e..]) + Vector256.Create(slot[e..])).CopyTo(output[e..]);
                first = false;
            }
    }

    // One (query block, key block) pair of the backward: P and dS again from the scores, then dQ += dS·K into the
    // block's rows, and Pᵀ·dY, dSᵀ·Q into the pair's slots.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PairGradients(in Problem p, int hg, int qb, int j0, int n, Scratch s, float[] kT, float[] vT,
        float[] lse, float[] delta, float[] dy, float[]? dq, float[]? slotsK, float[]? slotsV)
    {
        int d = p.D, head = hg / p.Group, cols = (n + 7) / 8 * 8;
        int i0 = qb * QueryBlock, m = Math.Min(QueryBlock, p.S - i0), row0 = hg * p.S + i0;
        int slot = (hg * p.QueryBlocks + qb) * KeyBlock * d;
        fixed (float* q = p.Q, k = p.K, kt = kT, vt = vT, g = dy, pt = s.P, dpt = s.DP)
        {
            float* qBlock = q + (nint)row0 * d, gBlock = g + (nint)row0 * d;
            float* ktBlock = kt + p.PanelOffset(head, j0 / KeyBlock), vtBlock = vt + p.PanelOffset(head, j0 / KeyBlock);
            Probabilities(p, qBlock, m, i0, j0, n, cols, ktBlock, pt, lse, row0);
            if (slotsV is not null)
                fixed (float* sv = slotsV) Product(pt, 1, KeyBlock, n, m, gBlock, d, d, sv + slot, d, accumulate: false);   // Pᵀ·dY
            ScoreGradient(p, gBlock, m, cols, vtBlock, pt, dpt, delta, row0);
            if (slotsK is not null)
                fixed (float* sk = slotsK) Product(dpt, 1, KeyBlock, n, m, qBlock, d, d, sk + slot, d, accumulate: false);  // dSᵀ·Q
            if (dq is not null)
                fixed (float* dqp = dq)
                    Product(dpt, KeyBlock, 1, m, n, k + p.KOffset + (nint)head * p.KHeadStride + (nint)j0 * d, d, d,
                        dqp + (nint)row0 * d, d, accumulate: true);                                                            // dQ += dS·K
        }
    }

    // P[i, j] = exp(scale·q_i·k_j − lse_i) for the keys row i sees in the block, 0 for the rest of the tile's first
    // cols columns (m × KeyBlock tile; ktBlock: the key block's panel of the transposed K).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Probabilities(in Problem p, float* qBlock, int m, int i0, int j0, int n, int cols, float* ktBlock, float* pt, float[] lse, int row0)
    {
        Product(qBlock, p.D, 1, m, p.D, ktBlock, KeyBlock, cols, pt, KeyBlock, accumulate: false);
        for (int i = 0; i < m; i++)
        {
            float* row = pt + i * KeyBlock;
            int visible = Math.Clamp(p.Offset + i0 + i + 1 - j0, 0, n);
            ExpMinus(row, visible, lse[row0 + i]);
            new Span<float>(row + visible, cols - visible).Clear();
        }
    }

    // dS = P ∘ (dY·Vᵀ − δ), the gradient of the scaled scores, into dpt over the first cols columns (P is 0 where
    // masked, so dS is too).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoreGradient(in Problem p, float* gBlock, int m, int cols, float* vtBlock, float* pt, float* dpt, float[] delta, int row0)
    {
        Product(gBlock, p.D, 1, m, p.D, vtBlock, KeyBlock, cols, dpt, KeyBlock, accumulate: false);  // dP = dY·Vᵀ
        for (int i = 0; i < m; i++)
        {
            float* pr = pt + i * KeyBlock, dr = dpt + i * KeyBlock;
            var vd = Vector256.Create(delta[row0 + i]);
            for (int j = 0; j < cols; j += 8)
                Vector256.Store(Vector256.Load(pr + j) * (Vector256.Load(dr + j) - vd), dr + j);
        }
    }

    // max of row[0..n) (n ≥ 1). A NaN score needs no care here: its exp is NaN, and so is the row's output.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Max(float* row, int n)
    {
        float max = float.NegativeInfinity;
        int j = 0;
        if (n >= 8)
        {
            var vmax = Vector256.Load(row);
            for (j = 8; j <= n - 8; j += 8) vmax = Vector256.MaxNative(vmax, Vector256.Load(row + j));
            for (int l = 0; l < 8; l++) max = MathF.Max(max, vmax[l]);
        }
        for (; j < n; j++) max = MathF.Max(max, row[j]);
        return max;
    }

    // row[0..n) = exp(row − shift) for row ≤ shift; returns their sum (8 lanes in order, then across them). The
    // tail goes through the same 8-lane exp, its unused lanes −∞ (exp 0), so every element gets the same function.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float ExpMinus(float* row, int n, float shift)
    {
        var vs = Vector256.Create(shift);
        var sum = Vector256<float>.Zero;
        int j = 0;
        for (; j <= n - 8; j += 8)
        {
            var e = ExpNonPositive(Vector256.Load(row + j) - vs);
            Vector256.Store(e, row + j);
            sum += e;
        }
        if (j < n)
        {
            var tail = Vector256.Create(float.NegativeInfinity);
            for (int l = 0; l < n - j; l++) tail = tail.WithElement(l, row[j + l] - shift);
            tail = ExpNonPositive(tail);
            for (int l = 0; l < n - j; l++) row[j + l] = tail[l];
            sum += tail;
        }
        return Vector256.Sum(sum);
    }

    // exp(x) for x ≤ 0 in 8 lanes (Cephes' expf: x = n·ln 2 + r with |r| ≤ ln 2 / 2, a degree-5 polynomial for e^r,
    // 2ⁿ from the exponent bits; within 2 ulp of the true value), 0 below −87.3 (where 2ⁿ would leave the normal
    // range). Our own rather than Vector256.Exp: that one is a generic method of the runtime library, which runs as
    // unoptimised tier-0 code for the first thousands of calls in an app with default JIT settings, and the tiles call
    // it for every block of scores.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> ExpNonPositive(Vector256<float> x)
    {
        var underflow = Vector256.LessThan(x, Vector256.Create(-87.3f));
        var n = Vector256.Round(x * Vector256.Create(1.44269504088896341f));
        var r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-0.693359375f), x);
        r = Vector256.FusedMultiplyAdd(n, Vector256.Create(2.12194440e-4f), r);
        var y = Vector256.Create(1.9875691500e-4f);
        y = Vector256.FusedMultiplyAdd(y, r, Vector256.Create(1.3981999507e-3f));
        y = Vector256.FusedMultiplyAdd(y, r, Vector256.Create(8.3334519073e-3f));
        y = Vector256.FusedMultiplyAdd(y, r, Vector256.Create(4.1665795894e-2f));
        y = Vector256.FusedMultiplyAdd(y, r, Vector256.Create(1.6666665459e-1f));
        y = Vector256.FusedMultiplyAdd(y, r, Vector256.Create(5.0000001201e-1f));
        y = Vector256.FusedMultiplyAdd(y, r * r, r + Vector256<float>.One);
        var scale = (Vector256.ConvertToInt32(n) + Vector256.Create(127)) << 23;
        return Vector256.AndNot(y * scale.AsSingle(), underflow);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScaleRow(float* row, int d, float factor)
    {
        var vf = Vector256.Create(factor);
        for (int t = 0; t < d; t += 8) Vector256.Store(Vector256.Load(row + t) * vf, row + t);
    }

    // c[i, 0..cols) = (c[i, ·] if accumulate, else 0) + Σ_{t < inner} a[i, t]·b[t, 0..cols) for i < m, where a[i, t]
    // is at a + i·lda + t·ldt (ldt = 1: A as stored; lda = 1: A transposed, as Pᵀ·dY reads P). cols is a multiple of
    // 8. Two rows at a time share each load of b; every element is one FMA chain over t in order.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Product(float* a, int lda, int ldt, int m, int inner, float* b, int ldb, int cols, float* c, int ldc, bool accumulate)
    {
        int i = 0;
        for (; i + 2 <= m; i += 2)
        {
            float* a0 = a + (nint)i * lda, a1 = a0 + lda, c0 = c + (nint)i * ldc, c1 = c0 + ldc;
            int j = 0;
            for (; j + 32 <= cols; j += 32)
            {
                Vector256<float> x0, x1, x2, x3, y0, y1, y2, y3;
                if (accumulate)
                {
                    (x0, x1, x2, x3) = (Vector256.Load(c0 + j), Vector256.Load(c0 + j + 8), Vector256.Load(c0 + j + 16), Vector256.Load(c0 + j + 24));
                    (y0, y1, y2, y3) = (Vector256.Load(c1 + j), Vector256.Load(c1 + j + 8), Vector256.Load(c1 + j + 16), Vector256.Load(c1 + j + 24));
                }
                else
                {
                    x0 = x1 = x2 = x3 = y0 = y1 = y2 = y3 = Vector256<float>.Zero;
                }
                float* bt = b + j;
                for (int t = 0; t < inner; t++, bt += ldb)
                {
                    var b0 = Vector256.Load(bt); var b1 = Vector256.Load(bt + 8);
                    var b2 = Vector256.Load(bt + 16); var b3 = Vector256.Load(bt + 24);
                    var s0 = Vector256.Create(a0[t * ldt]); var s1 = Vector256.Create(a1[t * ldt]);
                    x0 = Vector256.FusedMultiplyAdd(s0, b0, x0); x1 = Vector256.FusedMultiplyAdd(s0, b1, x1);
                    x2 = Vector256.FusedMultiplyAdd(s0, b2, x2); x3 = Vector256.FusedMultiplyAdd(s0, b3, x3);
                    y0 = Vector256.FusedMultiplyAdd(s1, b0, y0); y1 = Vector256.FusedMultiplyAdd(s1, b1, y1);
                    y2 = Vector256.FusedMultiplyAdd(s1, b2, y2); y3 = Vector256.FusedMultiplyAdd(s1, b3, y3);
                }
                Vector256.Store(x0, c0 + j); Vector256.Store(x1, c0 + j + 8); Vector256.Store(x2, c0 + j + 16); Vector256.Store(x3, c0 + j + 24);
                Vector256.Store(y0, c1 + j); Vector256.Store(y1, c1 + j + 8); Vector256.Store(y2, c1 + j + 16); Vector256.Store(y3, c1 + j + 24);
            }
            for (; j < cols; j += 8)
            {
                var x0 = accumulate ? Vector256.Load(c0 + j) : Vector256<float>.Zero;
                var y0 = accumulate ? Vector256.Load(c1 + j) : Vector256<float>.Zero;
                float* bt = b + j;
                for (int t = 0; t < inner; t++, bt += ldb)
                {
                    var b0 = Vector256.Load(bt);
                    x0 = Vector256.FusedMultiplyAdd(Vector256.Create(a0[t * ldt]), b0, x0);
                    y0 = Vector256.FusedMultiplyAdd(Vector256.Create(a1[t * ldt]), b0, y0);
                }
                Vector256.Store(x0, c0 + j);
                Vector256.Store(y0, c1 + j);
            }
        }
        if (i < m)
        {
            float* a0 = a + (nint)i * lda, c0 = c + (nint)i * ldc;
            for (int j = 0; j < cols; j += 8)
            {
                var x0 = accumulate ? Vector256.Load(c0 + j) : Vector256<float>.Zero;
                float* bt = b + j;
                for (int t = 0; t < inner; t++, bt += ldb) x0 = Vector256.FusedMultiplyAdd(Vector256.Create(a0[t * ldt]), Vector256.Load(bt), x0);
                Vector256.Store(x0, c0 + j);
            }
        }
    }
}
