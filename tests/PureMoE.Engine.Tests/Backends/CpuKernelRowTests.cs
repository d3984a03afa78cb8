using FsCheck;
using FsCheck.Xunit;
using PureMoE.Backends;

namespace PureMoE.Engine.Tests.Backends;

/// <summary>Row kernels (reduce, softmax, norms), index ops, optimizer, rope and strided copies vs the reference; determinism.</summary>
public class CpuKernelRowTests
{
    // ------------------------------------------------------------------ reduce

    private static void CheckReduce(ReduceOp op, int outer, int n, int inner, int seed, int xOff = 0)
    {
        var x = K.Rand(outer * n * inner + xOff, seed);
        var ye = K.S(new float[outer * inner]); var ya = K.S(new float[outer * inner]);
        K.Ref.Reduce(op, K.S(x), xOff, ye, outer, n, inner);
        K.Cpu.Reduce(op, K.S(x), xOff, ya, outer, n, inner);
        if (op == ReduceOp.Max || inner > 1)
        {
            K.SameBits(K.F(ye), K.F(ya), $"{op} {outer}x{n}x{inner}"); // same order as the reference: same bits
            return;
        }
        // Σ in a different order: error ≤ ~n·ε·Σ|x|; the values are O(1) so Σ|x| ≤ 3n.
        K.Close(K.F(ye), K.F(ya), 1e-5, 1e-6 * 3 * n, $"{op} {outer}x{n}x{inner}");
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(3, 17, 1)]
    [InlineData(5, 1000, 1)]
    [InlineData(64, 1000, 1)]   // rows split over threads
    [InlineData(2, 33, 17)]
    [InlineData(4, 50, 300)]    // slabs split over outer
    [InlineData(1, 100, 1003)]  // one slab split over columns
    [InlineData(3, 1, 33)]
    public void ReduceMatchesReference(int outer, int n, int inner)
    {
        CheckReduce(ReduceOp.Sum, outer, n, inner, outer + n + inner);
        CheckReduce(ReduceOp.Max, outer, n, inner, outer * n + inner, xOff: 3);
    }

    [Property(MaxTest = 40)]
    public void ReduceProperty(PositiveInt outer, PositiveInt n, PositiveInt inner, int seed)
    {
        int o = outer.Get % 8 + 1, m = n.Get % 200 + 1, i = inner.Get % 3 == 0 ? 1 : inner.Get % 70 + 1;
        CheckReduce(ReduceOp.Sum, o, m, i, seed);
        CheckReduce(ReduceOp.Max, o, m, i, seed);
    }

    [Fact]
    public void ReduceMaxPropagatesNaN()
    {
        var x = K.Rand(40, 1); x[13] = float.NaN; x[33] = float.NaN;
        foreach (int inner in new[] { 1, 4 })
        {
            var ye = K.S(new float[40 / (10 / inner * inner) * inner]);
            var ya = K.S(new float[ye.Length]);
            int n = 10 / inner * 1, outer = 40 / (n * inner);
            K.Ref.Reduce(ReduceOp.Max, K.S(x), 0, ye, outer, n, inner);
            K.Cpu.Reduce(ReduceOp.Max, K.S(x), 0, ya, outer, n, inner);
            K.Close(K.F(ye), K.F(ya), 0, 0);
        }
    }

    // ------------------------------------------------------------------ softmax

    private static void CheckSoftmax(int rows, int n, bool log, int causal, int seed)
    {
        var x = K.Rand(rows * n, seed, -8, 8);
        var ye = K.S(new float[rows * n]); var ya = K.S(new float[rows * n]);
        K.Ref.Softmax(K.S(x), ye, rows, n, log, causal);
        K.Cpu.Softmax(K.S(x), ya, rows, n, log, causal);
        K.Close(K.F(ye), K.F(ya), 1e-5, log ? 2e-6 : 1e-8, $"softmax {rows}x{n} log={log} causal={causal}");

        var dy = MaskedNaN(K.Rand(rows * n, seed + 1), rows, n, causal);
        var ge = K.S(new float[rows * n]); var ga = K.S(new float[rows * n]);
        K.Ref.SoftmaxBackward(ye, K.S(dy), ge, rows, n, log, causal);
        K.Cpu.SoftmaxBackward(ye, K.S(dy), ga, rows, n, log, causal);
        K.Close(K.F(ge), K.F(ga), 1e-5, 1e-5 * (log ? n : 1), $"softmax backward {rows}x{n} log={log} causal={causal}");
        Assert.All(K.F(ga), g => Assert.True(float.IsFinite(g), "a masked (NaN) dy was read"));
    }

    /// <summary>dy with NaN in the columns the causal mask hides: the backward must not read them.</summary>
    internal static float[] MaskedNaN(float[] dy, int rows, int n, int causal)
    {
        if (causal <= 0) return dy;
        for (int r = 0; r < rows; r++)
            for (int j = Math.Max(0, r % causal + n - causal + 1); j < n; j++)
                dy[r * n + j] = float.NaN;
        return dy;
    }

    [Theory]
    [InlineData(1, 1, 0)]
    [InlineData(3, 17, 0)]
    [InlineData(5, 33, 0)]
    [InlineData(7, 1000, 0)]
    [InlineData(64, 1000, 0)]   // multi-threaded
    [InlineData(12, 9, 4)]      // causal, n > queries (KV cache)
    [InlineData(12, 4, 4)]      // causal, square
    [InlineData(12, 3, 6)]      // causal, queries > n: rows with no valid column
    [InlineData(128, 300, 64)]  // causal, multi-threaded
    public void SoftmaxMatchesReference(int rows, int n, int causal)
    {
        CheckSoftmax(rows, n, false, causal, rows + n);
        CheckSoftmax(rows, n, true, causal, rows * n);
    }

    [Property(MaxTest = 40)]
    public void SoftmaxProperty(PositiveInt rows, PositiveInt n, bool log, int seed)
    {
        int r = rows.Get % 20 + 1, m = n.Get % 200 + 1;
        int causal = (seed & 3) == 0 ? (seed & 0xff) % r + 1 : 0;
        CheckSoftmax(r, m, log, causal, seed);
    }

    // ------------------------------------------------------------------ cross-entropy by rows

    [Theory]
    [InlineData(1, 1)]
    [InlineData(5, 7)]
    [InlineData(9, 300)]
    [InlineData(64, 1000)]    // multi-threaded
    [InlineData(3, 50257)]    // GPT-2's vocabulary
    public void CrossEntropyRowsMatchReference(int rows, int n)
    {
        var x = K.Rand(rows * n, rows + n, -4, 4);
        // Every third row ignored (−100), and one target out of range (its logit reads as 0, as on a GPU).
        var targets = Enumerable.Range(0, rows).Select(r => r % 3 == 1 ? -100L : r == rows - 1 && rows > 2 ? n + 5 : (long)(r * 7 % n)).ToArray();
        var g = K.Rand(rows, 3);
        var (le, ce, se) = (K.S(new float[rows]), K.S(new float[rows]), K.S(new float[rows]));
        var (la, ca, sa) = (K.S(new float[rows]), K.S(new float[rows]), K.S(new float[rows]));
        K.Ref.CrossEntropyRows(K.S(x), new CpuStorage(targets), -100, le, ce, se, rows, n);
        K.Cpu.CrossEntropyRows(K.S(x), new CpuStorage(targets), -100, la, ca, sa, rows, n);
        // The reference sums e^(x − max) in order, the SIMD kernel in eight lanes: a few ulps of log Σ apart.
        K.Close(K.F(le), K.F(la), 1e-5, 1e-6, "loss");
        Assert.Equal(K.F(ce), K.F(ca));
        K.Close(K.F(se), K.F(sa), 1e-5, 1e-6, "log Σ e^x");

        var (dxe, dxa) = (K.S(new float[rows * n]), K.S(new float[rows * n]));
        K.Ref.CrossEntropyRowsBackward(K.S(x), new CpuStorage(targets), -100, se, K.S(g), dxe, rows, n);
        K.Cpu.CrossEntropyRowsBackward(K.S(x), new CpuStorage(targets), -100, se, K.S(g), dxa, rows, n);
        K.Close(K.F(dxe), K.F(dxa), 1e-5, 1e-7, "dx");
    }

    // ------------------------------------------------------------------ rmsnorm

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 17)]
    [InlineData(5, 33)]
    [InlineData(7, 1000)]
    [InlineData(128, 512)] // multi-threaded
    public void RmsNormMatchesReference(int rows, int n)
    {
        var x = K.Rand(rows * n, rows); var w = K.Rand(n, n, 0.5f, 1.5f); var dy = K.Rand(rows * n, 7);
        var ye = K.S(new float[rows * n]); var ya = K.S(new float[rows * n]);
        var re = K.S(new float[rows]); var ra = K.S(new float[rows]);
        K.Ref.RmsNorm(K.S(x), K.S(w), ye, re, rows, n, 1e-5);
        K.Cpu.RmsNorm(K.S(x), K.S(w), ya, ra, rows, n, 1e-5);
        K.Close(K.F(re), K.F(ra), 1e-5, 0, "rstd");
        K.Close(K.F(ye), K.F(ya), 1e-5, 1e-6, "y");

        var dxe = K.S(new float[rows * n]); var dxa = K.S(new float[rows * n]);
        var dwe = K.S(new float[n]); var dwa = K.S(K.Rand(n, 3)); // dw is written, not accumulated into
        K.Ref.RmsNormBackward(K.S(x), K.S(w), re, K.S(dy), dxe, dwe, rows, n);
        K.Cpu.RmsNormBackward(K.S(x), K.S(w), re, K.S(dy), dxa, dwa, rows, n);
        K.Close(K.F(dxe), K.F(dxa), 1e-5, 1e-5, "dx");
        K.SameBits(K.F(dwe), K.F(dwa), "dw"); // rows summed in row order, as the reference
    }

    // ------------------------------------------------------------------ index ops

    private static long[] Indices(int count, int axisLen, int seed)
    {
        var rng = new Random(seed);
        var ix = new long[count];
        for (int j = 0; j < count; j++) ix[j] = rng.Next(axisLen);
        return ix;
    }

    [Theory]
    [InlineData(1, 5, 3, 1)]
    [InlineData(2, 7, 10, 17)]
    [InlineData(3, 50, 80, 33)]
    [InlineData(1, 100, 300, 1000)] // multi-threaded, split over columns
    [InlineData(4, 64, 64, 257)]    // multi-threaded, split over outer
    public void IndexSelectAndIndexAddMatchReference(int outer, int axisLen, int count, int inner)
    {
        var ix = K.S(Indices(count, axisLen, count)); // repeated indices: accumulation order matters
        var src = K.Rand(outer * axisLen * inner, 1);
        var se = K.S(new float[outer * count * inner]); var sa = K.S(new float[outer * count * inner]);
        K.Ref.IndexSelect(K.S(src), ix, se, outer, axisLen, count, inner);
        K.Cpu.IndexSelect(K.S(src), ix, sa, outer, axisLen, count, inner);
        K.SameBits(K.F(se), K.F(sa), "IndexSelect");

        var add = K.Rand(outer * count * inner, 2);
        var de = K.S(K.Rand(outer * axisLen * inner, 3)); var da = K.S(K.F(de));
        K.Ref.IndexAdd(de, ix, K.S(add), outer, axisLen, count, inner);
        K.Cpu.IndexAdd(da, ix, K.S(add), outer, axisLen, count, inner);
        K.SameBits(K.F(de), K.F(da), "IndexAdd"); // in index order, as the reference
    }

    [Fact]
    public void IndexSelectInt64AndFloat64()
    {
        var ix = K.S(new long[] { 2, 0, 2 });
        var s = K.S(new long[] { 1, 2, 3, 4, 5, 6 });
        var d = K.S(new long[6]);
        K.Cpu.IndexSelect(s, ix, d, 1, 3, 3, 2);
        Assert.Equal(new long[] { 5, 6, 1, 2, 5, 6 }, ((CpuStorage)d).As<long>());
        var sd = K.S(new double[] { 1, 2, 3 }); var dd = K.S(new double[3]);
        K.Cpu.IndexSelect(sd, ix, dd, 1, 3, 3, 1);
        Assert.Equal(new double[] { 3, 1, 3 }, ((CpuStorage)dd).As<double>());
    }

    [Fact]
    public void IndexOpsRejectOutOfRangeIndices()
    {
        var ix = K.S(new long[] { 0, 3 });
        var ex = Assert.Throws<IndexOutOfRangeException>(() =>
            K.Cpu.IndexSelect(K.S(new float[300000]), ix, K.S(new float[200000]), 1, 3, 2, 100000));
        Assert.Contains("IndexSelect: index 3", ex.Message);
        Assert.Throws<IndexOutOfRangeException>(() => K.Cpu.IndexAdd(K.S(new float[9]), ix, K.S(new float[6]), 1, 3, 2, 3));
        Assert.Throws<IndexOutOfRangeException>(() => K.Cpu.Gather(K.S(new float[3]), ix, K.S(new float[2]), 1, 3, 2, 1));
        Assert.Throws<IndexOutOfRangeException>(() => K.Cpu.ScatterAdd(K.S(new float[3]), ix, K.S(new float[2]), 1, 3, 2, 1));
    }

    [Theory]
    [InlineData(1, 5, 3)]
    [InlineData(7, 33, 17)]
    [InlineData(64, 1000, 300)]
    public void GatherAndScatterAddMatchReference(int outer, int axisLen, int count)
    {
        var ix = K.S(Indices(outer * count, axisLen, axisLen));
        var src = K.Rand(outer * axisLen, 4);
        var ge = K.S(new float[outer * count]); var ga = K.S(new float[outer * count]);
        K.Ref.Gather(K.S(src), ix, ge, outer, axisLen, count, 1);
        K.Cpu.Gather(K.S(src), ix, ga, outer, axisLen, count, 1);
        K.SameBits(K.F(ge), K.F(ga), "Gather");
        var add = K.Rand(outer * count, 5);
        var de = K.S(new float[outer * axisLen]); var da = K.S(new float[outer * axisLen]);
        K.Ref.ScatterAdd(de, ix, K.S(add), outer, axisLen, count, 1);
        K.Cpu.ScatterAdd(da, ix, K.S(add), outer, axisLen, count, 1);
        K.SameBits(K.F(de), K.F(da), "ScatterAdd");
    }

    // ------------------------------------------------------------------ AdamW, rope

    [Theory]
    [InlineData(1)]
    [InlineData(17)]
    [InlineData(1000)]
    [InlineData(70001)]
    public void AdamWMatchesReference(int n)
    {
        var p = K.Rand(n, 1); var g = K.Rand(n, 2); var m = K.Rand(n, 3, -0.1f, 0.1f); var v = K.Rand(n, 4, 0, 0.1f);
        CpuStorage pe = K.S(p), me = K.S(m), ve = K.S(v), pa = K.S(p), ma = K.S(m), va = K.S(v);
        for (int step = 1; step <= 3; step++)
        {
            double bc1 = 1 - Math.Pow(0.9, step), bc2 = 1 - Math.Pow(0.999, step);
            K.Ref.AdamW(pe, K.S(g), me, ve, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, bc1, bc2);
            K.Cpu.AdamW(pa, K.S(g), ma, va, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, bc1, bc2);
        }
        K.Close(K.F(pe), K.F(pa), 1e-6, 1e-7, "param");
        K.Close(K.F(me), K.F(ma), 1e-6, 1e-7, "m");
        K.Close(K.F(ve), K.F(va), 1e-6, 1e-9, "v");
    }

    [Theory]
    [InlineData(1, 1, 2, false)]
    [InlineData(2, 5, 34, true)]
    [InlineData(3, 7, 64, false)]
    [InlineData(8, 128, 128, true)] // multi-threaded
    public void RopeMatchesReference(int outer, int seq, int dim, bool inverse)
    {
        var x = K.Rand(outer * seq * dim, 1);
        var cos = K.Rand(seq * dim / 2, 2, -1, 1); var sin = K.Rand(seq * dim / 2, 3, -1, 1);
        var dense = RopeLayout.Dense(seq, dim);
        // outer = batch × heads with 2 heads where it divides: the heads of a [B, S, H, D] buffer, read or written.
        int heads = outer % 2 == 0 ? 2 : 1;
        var headsLayout = new RopeLayout(heads, seq * heads * dim, dim, heads * dim);
        foreach (var (xl, yl) in new[] { (dense, dense), (headsLayout, dense), (dense, headsLayout) })
        {
            var ye = K.S(new float[x.Length]); var ya = K.S(new float[x.Length]);
            K.Ref.Rope(K.S(x), xl, K.S(cos), K.S(sin), ye, yl, outer, seq, dim, inverse);
            K.Cpu.Rope(K.S(x), xl, K.S(cos), K.S(sin), ya, yl, outer, seq, dim, inverse);
            K.SameBits(K.F(ye), K.F(ya), $"rope {xl} -> {yl}");
        }
    }

    [Fact]
    public void RopeLayoutsAddressTheHeadsOfABatchSequenceHeadsBuffer()
    {
        // x [B=2, S=3, H=2, D=4] read as [B, H, S, D]: row (b·H + h, s) starts at ((b·S + s)·H + h)·D.
        var layout = new RopeLayout(2, 3 * 2 * 4, 4, 2 * 4);
        for (int b = 0; b < 2; b++)
            for (int h = 0; h < 2; h++)
                for (int s = 0; s < 3; s++)
                    Assert.Equal(((b * 3 + s) * 2 + h) * 4, layout.Row(b * 2 + h, s));
        var dense = RopeLayout.Dense(3, 4);
        Assert.Equal((5 * 3 + 2) * 4, dense.Row(5, 2));
        // The reference with that layout equals the dense rotation of the transposed copy.
        var x = K.Rand(2 * 3 * 2 * 4, 7);
        var cos = K.Rand(3 * 2, 8, -1, 1); var sin = K.Rand(3 * 2, 9, -1, 1);
        var transposed = new float[x.Length];
        for (int b = 0; b < 2; b++)
            for (int h = 0; h < 2; h++)
                for (int s = 0; s < 3; s++)
                    for (int d = 0; d < 4; d++)
                        transposed[((b * 2 + h) * 3 + s) * 4 + d] = x[((b * 3 + s) * 2 + h) * 4 + d];
        var viaLayout = K.S(new float[x.Length]); var viaCopy = K.S(new float[x.Length]);
        K.Ref.Rope(K.S(x), layout, K.S(cos), K.S(sin), viaLayout, dense, 4, 3, 4, false);
        K.Ref.Rope(K.S(transposed), dense, K.S(cos), K.S(sin), viaCopy, dense, 4, 3, 4, false);
        K.SameBits(K.F(viaCopy), K.F(viaLayout), "heads layout");
    }

    // ------------------------------------------------------------------ strided copy

    public static readonly TheoryData<int[], int[], int, int> CopyCases = new()
    {
        { [3, 17], [17, 1], 0, 51 },           // contiguous
        { [3, 17], [17, 1], 5, 56 },           // contiguous with offset
        { [37, 53], [1, 37], 0, 37 * 53 },     // 2-D transpose (blocked)
        { [4, 5, 6], [30, 1, 5], 0, 120 },     // last two dims swapped
        { [4, 5, 6], [1, 24, 4], 0, 120 },     // full reversal of a [6,5,4]
        { [5, 7], [20, 1], 3, 200 },           // row slice: last dim contiguous
        { [2, 3, 4], [0, 4, 1], 0, 12 },       // broadcast (stride 0)
        { [6], [3], 1, 20 },                   // strided 1-D
        { [1, 1], [5, 7], 2, 10 },             // single element
        { [300, 400], [1, 300], 0, 120000 },   // large transpose
    };

    [Theory]
    [MemberData(nameof(CopyCases))]
    public void CopyStridedMatchesReference(int[] shape, int[] strides, int offset, int srcLen)
    {
        var src = K.Rand(srcLen, srcLen);
        var sh = new Shape(shape);
        var de = K.S(new float[sh.Numel + 2]); var da = K.S(new float[sh.Numel + 2]);
        K.Ref.CopyStrided(new Strided(K.S(src), offset, strides), sh, de, 2);
        K.Cpu.CopyStrided(new Strided(K.S(src), offset, strides), sh, da, 2);
        K.SameBits(K.F(de), K.F(da), "copy");

        var srcL = src.Select(v => (long)(v * 1000)).ToArray();
        var le = K.S(new long[sh.Numel]); var la = K.S(new long[sh.Numel]);
        K.Ref.CopyStrided(new Strided(K.S(srcL), offset, strides), sh, le, 0);
        K.Cpu.CopyStrided(new Strided(K.S(srcL), offset, strides), sh, la, 0);
        Assert.Equal(((CpuStorage)le).As<long>(), ((CpuStorage)la).As<long>());

        // dtype conversion: one typed loop for a contiguous view, the reference otherwise; the same values.
        var ce = K.S(new double[sh.Numel]); var ca = K.S(new double[sh.Numel]);
        K.Ref.CopyStrided(new Strided(K.S(src), offset, strides), sh, ce, 0);
        K.Cpu.CopyStrided(new Strided(K.S(src), offset, strides), sh, ca, 0);
        Assert.Equal(((CpuStorage)ce).As<double>(), ((CpuStorage)ca).As<double>());
    }

    [Fact]
    public void ContiguousConversionsMatchTheReferenceBitForBit()
    {
        // Values that round, overflow float32, are not numbers, or are integers beyond 2^24 and 2^53.
        double[] d = [0.1, -0.0, 1e300, -1e-300, double.NaN, double.PositiveInfinity, 16777217.0, 3.0000001192092896, -2.5];
        long[] l = [0, -1, 16777217, (1L << 53) + 1, long.MaxValue, long.MinValue, 123456789];
        float[] f = [0.1f, -0f, float.NaN, float.NegativeInfinity, 16777216f, -3.4e38f];
        void Check(Array src, Array expected, Array actual, int offset)
        {
            int n = src.Length - offset;
            var shape = new Shape(n);
            var (e, a) = (K.S(expected), K.S(actual));
            K.Ref.CopyStrided(new Strided(K.S(src), offset, [1]), shape, e, 1);
            K.Cpu.CopyStrided(new Strided(K.S(src), offset, [1]), shape, a, 1);
            var want = ((CpuStorage)e).Data;
            var got = ((CpuStorage)a).Data;
            for (int i = 0; i < want.Length; i++)
                Assert.True(Equals(want.GetValue(i), got.GetValue(i)), $"{src.GetType().Name} -> {want.GetType().Name} [{i}]: {want.GetValue(i)} vs {got.GetValue(i)}");
        }
        foreach (int offset in new[] { 0, 2 })
        {
            Check(d, new float[d.Length + 1], new float[d.Length + 1], offset);
            Check(f, new double[f.Length + 1], new double[f.Length + 1], offset);
            Check(l, new double[l.Length + 1], new double[l.Length + 1], offset);
            Check(l, new float[l.Length + 1], new float[l.Length + 1], offset);
            Check(d, new long[d.Length + 1], new long[d.Length + 1], offset);   // left to the reference
        }
    }

    // ------------------------------------------------------------------ determinism

    [Fact]
    public void KernelsAreDeterministic()
    {
        int rows = 256, n = 1024;
        var x = K.Rand(rows * n, 11); var w = K.Rand(n, 12); var dy = K.Rand(rows * n, 13);
        float[] Run(Func<float[]> f) => f();
        float[] Sum1() { var y = K.S(new float[rows]); K.Cpu.Reduce(ReduceOp.Sum, K.S(x), 0, y, rows, n, 1); return K.F(y); }
        float[] SumN() { var y = K.S(new float[n]); K.Cpu.Reduce(ReduceOp.Sum, K.S(x), 0, y, 1, rows, n); return K.F(y); }
        float[] Soft() { var y = K.S(new float[rows * n]); K.Cpu.Softmax(K.S(x), y, rows, n, false, 0); return K.F(y); }
        float[] Norm()
        {
            var rs = K.S(new float[rows]); var y = K.S(new float[rows * n]);
            K.Cpu.RmsNorm(K.S(x), K.S(w), y, rs, rows, n, 1e-6);
            var dx = K.S(new float[rows * n]); var dw = K.S(new float[n]);
            K.Cpu.RmsNormBackward(K.S(x), K.S(w), rs, K.S(dy), dx, dw, rows, n);
            return [.. K.F(dx), .. K.F(dw)];
        }
        float[] IdxAdd()
        {
            var ix = K.S(Indices(rows, 16, 5)); var d = K.S(new float[16 * n]);
            K.Cpu.IndexAdd(d, ix, K.S(x), 1, 16, rows, n);
            return K.F(d);
        }
        foreach (var f in new Func<float[]>[] { Sum1, SumN, Soft, Norm, IdxAdd })
            K.SameBits(Run(f), Run(f), f.Method.Name);
    }
}
