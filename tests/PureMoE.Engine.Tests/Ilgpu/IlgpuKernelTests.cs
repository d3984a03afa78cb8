using PureMoE.Backends;
using PureMoE.Backends.Ilgpu;
using PureMoE.Engine.Tests.Backends;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>Kernels on ILGPU's CPU accelerator (the GPU emulator) against the reference backend.</summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class IlgpuCpuKernelTests : IlgpuKernelTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.IlgpuCpu;
}

/// <summary>
/// The same kernel tests on the emulator shaped like a CUDA GPU (32-lane warps, 256-thread groups): the group and
/// warp sizes the backend uses on CUDA, where Device.IlgpuCpu has 4-lane warps and 16-thread groups.
/// </summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class CudaShapedKernelTests : IlgpuKernelTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.IlgpuCpu;

    /// <inheritdoc />
    protected override bool CudaShaped => true;
}

/// <summary>The same kernel tests on CUDA device 0; skipped where there is none.</summary>
[Trait("Device", "Cuda")]
[Collection("Ilgpu")]
public sealed class CudaKernelTests : IlgpuKernelTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.Cuda;
}

/// <summary>
/// Every primitive of the ILGPU backend against the reference backend on random inputs, with sizes that are not
/// multiples of the group size or the SGEMM tile (1, 3, 17, 33, 65). Tolerances as in the CPU kernel tests:
/// relative 1e-6..2e-6 elementwise (exp/log/tanh/pow may differ by an ulp), 1e-5 relative (plus an absolute
/// term scaled by the magnitudes) where the summation order differs (reductions, softmax, norms, GEMM).
/// </summary>
public abstract class IlgpuKernelTests : IlgpuTestBase
{
    public static readonly int[] Sizes = [1, 3, 17, 33, 65];

    [Fact]
    public void UnaryMatchesReference()
    {
        foreach (var op in Enum.GetValues<UnaryOp>())
            foreach (int n in Sizes)
            {
                bool positive = op is UnaryOp.Log or UnaryOp.Sqrt or UnaryOp.Rsqrt or UnaryOp.PowScalar;
                var x = K.Rand(n + 5, n * 31 + (int)op, positive ? 0.05f : -6f, 6f);
                double alpha = op == UnaryOp.PowScalar ? 1.7 : 0.37;
                var ye = K.S(new float[n + 2]);
                Ref.Unary(op, K.S(x), 5, ye, 2, n, alpha);
                var ya = B.Allocate(DType.Float32, n + 2);
                B.Unary(op, Up(x), 5, ya, 2, n, alpha);
                K.Close(K.F(ye), DownF(ya), 3e-6 * Slack, 5e-7 * Slack, $"{op} n={n}");
            }
    }

    [Theory]
    [InlineData(new[] { 17 }, new[] { 17 })]
    [InlineData(new[] { 3, 1, 5 }, new[] { 1, 4, 5 })]
    [InlineData(new[] { 33 }, new[] { 2, 1 })]
    [InlineData(new[] { 2, 3, 1, 2, 3, 1, 2 }, new[] { 1, 1, 4, 2, 1, 3, 1 })]
    [InlineData(new[] { 65, 1 }, new[] { 1 })]
    public void BinaryMatchesReference(int[] sa, int[] sb)
    {
        var shape = Shape.Broadcast(new Shape(sa), new Shape(sb), "test");
        int na = new Shape(sa).Numel, nb = new Shape(sb).Numel;
        foreach (var op in Enum.GetValues<BinaryOp>())
        {
            var a = K.Rand(na, na + (int)op, op == BinaryOp.Pow ? 0.1f : -3f, 3f);
            var b = K.Rand(nb, nb * 7 + (int)op, -3f, 3f);
            if (op == BinaryOp.Equal) for (int i = 0; i < Math.Min(na, nb); i += 2) a[i] = b[i];
            var stA = K.BroadcastStrides(sa, shape.ToArray());
            var stB = K.BroadcastStrides(sb, shape.ToArray());
            var ye = K.S(new float[shape.Numel]);
            Ref.Binary(op, new Strided(K.S(a), 0, stA), new Strided(K.S(b), 0, stB), ye, shape);
            var ya = B.Allocate(DType.Float32, shape.Numel);
            B.Binary(op, new Strided(Up(a), 0, stA), new Strided(Up(b), 0, stB), ya, shape);
            K.Close(K.F(ye), DownF(ya), 3e-6 * Slack, 1e-6 * Slack, $"{op} {shape}");
        }
    }

    [Fact]
    public void BinaryOnTransposedOperandWithOffset()
    {
        // a is a [5, 3] view of a [3, 5] buffer (transposed) starting at offset 2; b broadcasts a row.
        var a = K.Rand(17, 1);
        var b = K.Rand(3, 2);
        var shape = new Shape(5, 3);
        var sa = new Strided(K.S(a), 2, [1, 5]);
        var ye = K.S(new float[15]);
        Ref.Binary(BinaryOp.Mul, sa, new Strided(K.S(b), 0, [0, 1]), ye, shape);
        var ya = B.Allocate(DType.Float32, 15);
        B.Binary(BinaryOp.Mul, new Strided(Up(a), 2, [1, 5]), new Strided(Up(b), 0, [0, 1]), ya, shape);
        K.Close(K.F(ye), DownF(ya), 0, 0, "transposed");
    }

    [Fact]
    public void WhereMatchesReference()
    {
        var shape = new Shape(3, 17);
        var condF = K.Rand(17, 3).Select(v => v > 0 ? 1f : 0f).ToArray();
        var condL = RandIdx(3, 2, 4);
        var a = K.Rand(51, 5);
        var b = K.Rand(17, 6);
        var la = RandIdx(51, 100, 7);
        var lb = RandIdx(17, 100, 8);
        Strided Sa(Storage s) => new(s, 0, [17, 1]);
        Strided Sb(Storage s) => new(s, 0, [0, 1]);
        foreach (bool longCond in new[] { false, true })
        {
            Array cond = longCond ? condL : condF;
            int[] cst = longCond ? [1, 0] : [0, 1];
            var ye = K.S(new float[51]);
            Ref.Where(new(K.S(cond), 0, cst), Sa(K.S(a)), Sb(K.S(b)), ye, shape);
            var ya = B.Allocate(DType.Float32, 51);
            B.Where(new(Up(cond), 0, cst), Sa(Up(a)), Sb(Up(b)), ya, shape);
            K.Close(K.F(ye), DownF(ya), 0, 0, $"where float longCond={longCond}");

            var le = K.S(new long[51]);
            Ref.Where(new(K.S(cond), 0, cst), Sa(K.S(la)), Sb(K.S(lb)), le, shape);
            var lg = B.Allocate(DType.Int64, 51);
            B.Where(new(Up(cond), 0, cst), Sa(Up(la)), Sb(Up(lb)), lg, shape);
            Assert.Equal(((CpuStorage)le).As<long>(), DownL(lg));
        }
    }

    [Fact]
    public void CopyStridedAndConversions()
    {
        // A permuted [4, 3, 5] view of a [5, 3, 4] buffer, at offset 1.
        var x = K.Rand(61, 9, -50f, 50f);
        var lx = RandIdx(61, 1000, 10);
        var shape = new Shape(4, 3, 5);
        int[] st = [1, 4, 12];
        foreach (var (src, dst) in new[] { (DType.Float32, DType.Float32), (DType.Float32, DType.Int64), (DType.Int64, DType.Float32), (DType.Int64, DType.Int64) })
        {
            Array data = src == DType.Float32 ? x : lx;
            var e = CpuStorage.Allocate(dst, 63);
            Ref.CopyStrided(new(K.S(data), 1, st), shape, e, 3);
            var g = B.Allocate(dst, 63);
            B.CopyStrided(new(Up(data), 1, st), shape, g, 3);
            if (dst == DType.Float32) K.Close(K.F(e), DownF(g), 0, 0, $"{src}->{dst}");
            else Assert.Equal(e.As<long>(), DownL(g));
        }
    }

    [Fact]
    public void FillAndAllocate()
    {
        var f = B.Allocate(DType.Float32, 33);
        Assert.All(DownF(f), v => Assert.Equal(0f, v));
        B.Fill(f, 3, 17, 2.5);
        var expect = new float[33];
        expect.AsSpan(3, 17).Fill(2.5f);
        Assert.Equal(expect, DownF(f));
        var l = B.Allocate(DType.Int64, 65);
        B.Fill(l, 0, 65, -7);
        Assert.All(DownL(l), v => Assert.Equal(-7L, v));
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(3, 17, 1)]
    [InlineData(2, 65, 3)]
    [InlineData(5, 33, 1)]
    [InlineData(1, 1000, 1)]
    [InlineData(4, 3, 17)]
    [InlineData(300, 2, 1)]  // short rows (a router's k gates): one thread per row
    [InlineData(7, 32, 1)]   // the longest row summed by one thread
    [InlineData(2, 300, 5)]  // columns over a long n: 10 chunks of 32 (the last of 12), then the chunks in order
    [InlineData(1, 17, 3)]   // 2 chunks of 16, the second of 1
    public void ReduceMatchesReference(int outer, int n, int inner)
    {
        var x = K.Rand(outer * n * inner + 4, outer + n + inner);
        if (n > 2) x[4 + n / 2] = float.NaN; // max propagates NaN; sums too
        foreach (var op in new[] { ReduceOp.Sum, ReduceOp.Max })
        {
            var ye = K.S(new float[outer * inner]);
            Ref.Reduce(op, K.S(x), 4, ye, outer, n, inner);
            var ya = B.Allocate(DType.Float32, outer * inner);
            string rowKernel = op == ReduceOp.Sum ? "sumRows" : "maxRows", chunkKernel = op == ReduceOp.Sum ? "sumColChunks" : "maxColChunks";
            var before = B.LaunchesByKernel;
            B.Reduce(op, Up(x), 4, ya, outer, n, inner);
            long Ran(string kernel) => B.LaunchesByKernel.GetValueOrDefault(kernel) - before.GetValueOrDefault(kernel);
            // A group per row only for rows longer than ShortRow; the rest, one thread per output, and columns over a
            // long n first in chunks.
            Assert.Equal(inner == 1 && n > IlgpuBackend.ShortRow ? 1 : 0, Ran(rowKernel));
            Assert.Equal(inner > 1 && n > IlgpuBackend.ChunkRows(n) ? 1 : 0, Ran(chunkKernel));
            K.Close(K.F(ye), DownF(ya), 1e-5 * Slack, 1e-5 * Math.Sqrt(n) * Slack, $"{op} {outer}x{n}x{inner}");
        }
    }

    [Theory]
    [InlineData(1, 1, 1, 1)]
    [InlineData(3, 17, 5, 1)]
    [InlineData(33, 65, 17, 2)]
    [InlineData(65, 33, 70, 1)]
    [InlineData(17, 3, 1, 3)]
    public void GemmMatchesReference(int m, int n, int k, int batch)
    {
        var rng = new Random(m * 1000 + n * 10 + k);
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                foreach (double beta in new[] { 0.0, 0.5 })
                {
                    int lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 1, ldc = n + 3;
                    int rowsA = ta ? k : m, rowsB = tb ? n : k;
                    int strideA = rowsA * lda + 1, strideB = batch > 1 && rng.Next(2) == 0 ? 0 : rowsB * ldb, strideC = m * ldc + 2;
                    var a = K.Rand(3 + strideA * batch, rng.Next());
                    var b = K.Rand(1 + Math.Max(strideB * batch, rowsB * ldb), rng.Next());
                    var c = K.Rand(5 + strideC * batch, rng.Next());
                    if (beta == 0) c[5] = float.NaN; // beta = 0 must overwrite, not read
                    var ce = K.S(c);
                    Ref.Gemm(ta, tb, m, n, k, 1.5, K.S(a), 3, lda, strideA, K.S(b), 1, ldb, strideB, beta, ce, 5, ldc, strideC, batch);
                    var cg = Up(c);
                    B.Gemm(ta, tb, m, n, k, 1.5, Up(a), 3, lda, strideA, Up(b), 1, ldb, strideB, beta, cg, 5, ldc, strideC, batch);
                    K.Close(K.F(ce), DownF(cg), 1e-5 * Slack, 2e-6 * k * Slack, $"gemm {m}x{n}x{k} ta={ta} tb={tb} beta={beta} batch={batch}");
                }
    }

    [Theory]
    [InlineData(1, 1, 0)]
    [InlineData(3, 17, 0)]
    [InlineData(6, 33, 3)]
    [InlineData(4, 65, 2)]
    [InlineData(2, 300, 0)]
    [InlineData(300, 8, 0)]  // a router's rows: one thread per row
    [InlineData(10, 32, 5)]  // the longest row one thread takes, causal
    public void SoftmaxAndBackwardMatchReference(int rows, int n, int causal)
    {
        var launched = B.LaunchesByKernel;
        var x = K.Rand(rows * n, rows + n, -5, 5);
        var dy = CpuKernelRowTests.MaskedNaN(K.Rand(rows * n, rows * n + 1), rows, n, causal);
        foreach (bool log in new[] { false, true })
        {
            var ye = K.S(new float[rows * n]);
            Ref.Softmax(K.S(x), ye, rows, n, log, causal);
            var ya = B.Allocate(DType.Float32, rows * n);
            B.Softmax(Up(x), ya, rows, n, log, causal);
            K.Close(K.F(ye), DownF(ya), 1e-5 * Slack, 1e-6 * Slack, $"softmax log={log} {rows}x{n} causal={causal}");

            // With the mask, dy's masked columns are NaN: the backward must not read them.
            var dxe = K.S(new float[rows * n]);
            Ref.SoftmaxBackward(ye, K.S(dy), dxe, rows, n, log, causal);
            var dxa = B.Allocate(DType.Float32, rows * n);
            B.SoftmaxBackward(Up(K.F(ye)), Up(dy), dxa, rows, n, log, causal);
            K.Close(K.F(dxe), DownF(dxa), 1e-5 * Slack, 1e-5 * Slack, $"softmax backward log={log} {rows}x{n} causal={causal}");
        }
        // Rows of up to ShortRow elements take the thread-per-row kernels (2 calls each: softmax and log-softmax).
        bool shortRows = n <= IlgpuBackend.ShortRow;
        long Ran(string kernel) => B.LaunchesByKernel.GetValueOrDefault(kernel) - launched.GetValueOrDefault(kernel);
        Assert.Equal((shortRows ? 2 : 0, shortRows ? 0 : 2), (Ran("softmaxShortRows"), Ran("softmax")));
        Assert.Equal((shortRows ? 2 : 0, shortRows ? 0 : 2), (Ran("softmaxBackwardShortRows"), Ran("softmaxBackward")));
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 17)]
    [InlineData(5, 65)]
    [InlineData(33, 3)]    // dw in 3 chunks of 16 rows (the last of 1)
    [InlineData(300, 17)]  // 10 chunks of 32, the last of 12
    public void RmsNormAndBackwardMatchReference(int rows, int n)
    {
        var x = K.Rand(rows * n, rows * 3 + n);
        var w = K.Rand(n, n + 11);
        var dy = K.Rand(rows * n, n + 12);
        var ye = K.S(new float[rows * n]);
        var re = K.S(new float[rows]);
        Ref.RmsNorm(K.S(x), K.S(w), ye, re, rows, n, 1e-5);
        Storage gx = Up(x), gw = Up(w), ya = B.Allocate(DType.Float32, rows * n), ra = B.Allocate(DType.Float32, rows);
        B.RmsNorm(gx, gw, ya, ra, rows, n, 1e-5);
        K.Close(K.F(ye), DownF(ya), 1e-5 * Slack, 1e-6 * Slack, "rmsnorm y");
        K.Close(K.F(re), DownF(ra), 1e-5 * Slack, 0, "rmsnorm rstd");

        var dxe = K.S(new float[rows * n]);
        var dwe = K.S(new float[n]);
        Ref.RmsNormBackward(K.S(x), K.S(w), re, K.S(dy), dxe, dwe, rows, n);
        var dxa = B.Allocate(DType.Float32, rows * n);
        var dwa = Up(K.Rand(n, 99)); // written, not accumulated into
        B.RmsNormBackward(gx, gw, ra, Up(dy), dxa, dwa, rows, n);
        K.Close(K.F(dxe), DownF(dxa), 1e-5 * Slack, 1e-5 * Slack, "rmsnorm dx");
        K.Close(K.F(dwe), DownF(dwa), 1e-5 * Slack, 1e-5 * Math.Sqrt(rows) * Slack, "rmsnorm dw");
    }

    [Fact]
    public void LongReductionsAreCutIntoChunksOfAboutTheSquareRoot()
    {
        // A power of two near √n, at least 16: up to 16 in one pass; 1024 as 32 chunks of 32.
        foreach (var (n, chunk) in new[] { (0, 16), (16, 16), (17, 16), (256, 16), (257, 32), (1024, 32), (4096, 64), (5000, 128) })
            Assert.Equal(chunk, IlgpuBackend.ChunkRows(n));
    }

    [Theory]
    [InlineData(1, 1, 1, 1)]
    [InlineData(2, 5, 17, 3)]
    [InlineData(3, 17, 33, 1)]
    [InlineData(1, 4, 65, 5)]
    public void IndexKernelsMatchReference(int outer, int axisLen, int count, int inner)
    {
        var idx = RandIdx(count, axisLen, count + axisLen); // duplicates: adds must run in order of j
        var gidx = RandIdx(outer * count * inner, axisLen, count * 3);
        foreach (var dtype in new[] { DType.Float32, DType.Int64 })
        {
            Array src = dtype == DType.Float32 ? K.Rand(outer * axisLen * inner, 1) : RandIdx(outer * axisLen * inner, 50, 2);
            Array upd = dtype == DType.Float32 ? K.Rand(outer * count * inner, 3) : RandIdx(outer * count * inner, 50, 4);

            void Check(Storage e, Storage g, string what)
            {
                if (dtype == DType.Float32) K.Close(K.F(e), DownF(g), 1e-6 * Slack, 1e-6 * Slack, what);
                else Assert.Equal(((CpuStorage)e).As<long>(), DownL(g));
            }

            var e1 = CpuStorage.Allocate(dtype, outer * count * inner);
            Ref.IndexSelect(K.S(src), K.S(idx), e1, outer, axisLen, count, inner);
            var g1 = B.Allocate(dtype, outer * count * inner);
            B.IndexSelect(Up(src), Up(idx), g1, outer, axisLen, count, inner);
            Check(e1, g1, "IndexSelect");

            var e2 = K.S(src);
            Ref.IndexAdd(e2, K.S(idx), K.S(upd), outer, axisLen, count, inner);
            var g2 = Up(src);
            B.IndexAdd(g2, Up(idx), Up(upd), outer, axisLen, count, inner);
            Check(e2, g2, "IndexAdd");

            var e3 = CpuStorage.Allocate(dtype, outer * count * inner);
            Ref.Gather(K.S(src), K.S(gidx), e3, outer, axisLen, count, inner);
            var g3 = B.Allocate(dtype, outer * count * inner);
            B.Gather(Up(src), Up(gidx), g3, outer, axisLen, count, inner);
            Check(e3, g3, "Gather");

            var e4 = K.S(src);
            Ref.ScatterAdd(e4, K.S(gidx), K.S(upd), outer, axisLen, count, inner);
            var g4 = Up(src);
            B.ScatterAdd(g4, Up(gidx), Up(upd), outer, axisLen, count, inner);
            Check(e4, g4, "ScatterAdd");
        }
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(3, 17, 2)]
    [InlineData(5, 8, 8)]
    [InlineData(2, 65, 4)]
    public void TopKMatchesReference(int rows, int n, int k)
    {
        var x = K.Rand(rows * n, rows * n + k, -3, 3);
        for (int i = 0; i + 3 < x.Length; i += 5) x[i + 3] = x[i]; // ties
        if (x.Length > 6) x[6] = float.NaN;
        var ve = K.S(new float[rows * k]);
        var ie = K.S(new long[rows * k]);
        Ref.TopK(K.S(x), ve, ie, rows, n, k);
        var va = B.Allocate(DType.Float32, rows * k);
        var ia = B.Allocate(DType.Int64, rows * k);
        B.TopK(Up(x), va, ia, rows, n, k);
        Assert.Equal(((CpuStorage)ie).As<long>(), DownL(ia));
        K.Close(K.F(ve), DownF(va), 0, 0, "topk values");
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 17)]
    [InlineData(2, 33)]
    [InlineData(1, 65)]
    public void ArgSortMatchesReference(int rows, int n)
    {
        var x = K.Rand(rows * n, rows + n);
        for (int i = 0; i + 2 < x.Length; i += 4) x[i + 2] = x[i]; // ties: stability
        if (x.Length > 5) x[5] = float.NaN;
        var lx = RandIdx(rows * n, 4, n); // many ties
        foreach (bool desc in new[] { false, true })
            foreach (Array data in new Array[] { x, lx })
            {
                var e = K.S(new long[rows * n]);
                Ref.ArgSort(K.S(data), e, rows, n, desc);
                var g = B.Allocate(DType.Int64, rows * n);
                B.ArgSort(Up(data), g, rows, n, desc);
                Assert.Equal(((CpuStorage)e).As<long>(), DownL(g));
            }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(5, 7)]
    [InlineData(9, 300)]     // rows longer than a group
    public void CrossEntropyRowsMatchReference(int rows, int n)
    {
        var x = K.Rand(rows * n, rows + n, -4, 4);
        // Every third row ignored (−100), and one target out of range (its logit reads as 0).
        var targets = Enumerable.Range(0, rows).Select(r => r % 3 == 1 ? -100L : r == rows - 1 && rows > 2 ? n + 5 : (long)(r * 7 % n)).ToArray();
        var g = K.Rand(rows, 3);
        var (le, ce, se) = (K.S(new float[rows]), K.S(new float[rows]), K.S(new float[rows]));
        Ref.CrossEntropyRows(K.S(x), new CpuStorage(targets), -100, le, ce, se, rows, n);
        var (la, ca, sa) = (B.Allocate(DType.Float32, rows), B.Allocate(DType.Float32, rows), B.Allocate(DType.Float32, rows));
        var (xd, td) = (Up(x), B.Upload(targets));
        B.CrossEntropyRows(xd, td, -100, la, ca, sa, rows, n);
        K.Close(K.F(le), DownF(la), 1e-5 * Slack, 1e-6 * Slack, "loss");
        Assert.Equal(K.F(ce), DownF(ca));
        K.Close(K.F(se), DownF(sa), 1e-5 * Slack, 1e-6 * Slack, "log Σ e^x");

        var dxe = K.S(new float[rows * n]);
        Ref.CrossEntropyRowsBackward(K.S(x), new CpuStorage(targets), -100, se, K.S(g), dxe, rows, n);
        var dxa = B.Allocate(DType.Float32, rows * n);
        B.CrossEntropyRowsBackward(xd, td, -100, sa, Up(g), dxa, rows, n);
        K.Close(K.F(dxe), DownF(dxa), 1e-5 * Slack, 1e-6 * Slack, "dx");
    }

    [Theory]
    [InlineData(1, 1, 2)]
    [InlineData(3, 17, 6)]
    [InlineData(2, 5, 66)]
    public void RopeMatchesReference(int outer, int seq, int dim)
    {
        var x = K.Rand(outer * seq * dim, outer + seq + dim);
        var cos = K.Rand(seq * dim / 2, 1, -1, 1);
        var sin = K.Rand(seq * dim / 2, 2, -1, 1);
        var dense = RopeLayout.Dense(seq, dim);
        // outer = batch × heads with 3 heads where it divides: the heads of a [B, S, H, D] buffer, read or written.
        int heads = outer % 3 == 0 ? 3 : 1;
        var headsLayout = new RopeLayout(heads, seq * heads * dim, dim, heads * dim);
        foreach (bool inverse in new[] { false, true })
            foreach (var (xl, yl) in new[] { (dense, dense), (headsLayout, dense), (dense, headsLayout) })
            {
                var ye = K.S(new float[x.Length]);
                Ref.Rope(K.S(x), xl, K.S(cos), K.S(sin), ye, yl, outer, seq, dim, inverse);
                var ya = B.Allocate(DType.Float32, x.Length);
                B.Rope(Up(x), xl, Up(cos), Up(sin), ya, yl, outer, seq, dim, inverse);
                K.Close(K.F(ye), DownF(ya), 1e-6 * Slack, 1e-7 * Slack, $"rope inverse={inverse} {xl} -> {yl}");
            }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(33)]
    [InlineData(65)]
    public void AdamWMatchesReference(int n)
    {
        var p = K.Rand(n, n);
        var g = K.Rand(n, n + 1);
        var m = K.Rand(n, n + 2, -0.1f, 0.1f);
        var v = K.Rand(n, n + 3, 0f, 0.1f);
        Storage pe = K.S(p), me = K.S(m), ve = K.S(v);
        Ref.AdamW(pe, K.S(g), me, ve, n, 1e-3, 0.9, 0.999, 1e-8, 0.1, 1 - 0.9 * 0.9, 1 - 0.999 * 0.999);
        Storage pa = Up(p), ma = Up(m), va = Up(v);
        B.AdamW(pa, Up(g), ma, va, n, 1e-3, 0.9, 0.999, 1e-8, 0.1, 1 - 0.9 * 0.9, 1 - 0.999 * 0.999);
        K.Close(K.F(pe), DownF(pa), 1e-6 * Slack, 1e-7 * Slack, "param");
        K.Close(K.F(me), DownF(ma), 1e-6 * Slack, 1e-8 * Slack, "m");
        K.Close(K.F(ve), DownF(va), 1e-6 * Slack, 1e-8 * Slack, "v");
    }

    [Fact]
    public void PoolReusesDisposedBuffers()
    {
        var b = B;
        var first = b.Allocate(DType.Float32, 1000);
        first.Dispose();
        long before = b.Pool.Allocations;
        for (int i = 0; i < 10; i++)
        {
            var s = b.Allocate(DType.Float32, 1000);
            Assert.All(DownF(s), v => Assert.Equal(0f, v)); // reused buffers are zeroed again
            b.Fill(s, 0, 1000, 3);
            s.Dispose();
        }
        Assert.Equal(before, b.Pool.Allocations);
        Assert.Throws<ObjectDisposedException>(() => b.Fill(first, 0, 1, 1));
    }

    [Fact]
    public void Float64IsAClearError()
    {
        var e = Assert.Throws<NotSupportedException>(() => B.Allocate(DType.Float64, 3));
        Assert.Contains("float64", e.Message);
        Assert.Throws<NotSupportedException>(() => B.Upload(new double[3]));
        Assert.Throws<NotSupportedException>(() => Tensor.Zeros(new Shape(2), DType.Float64, Dev));
        Assert.Throws<NotSupportedException>(() => Tensor.FromArray(new double[] { 1, 2 }).To(Dev));
    }
}
