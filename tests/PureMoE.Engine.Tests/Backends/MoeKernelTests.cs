using PureMoE.Backends;
using PureMoE.Backends.Reference;

namespace PureMoE.Engine.Tests.Backends;

/// <summary>The fused MoE kernels: CPU vs the reference loops, and the IBackend default compositions vs both.</summary>
public class MoeKernelTests
{
    /// <summary>Implements only the required members (by forwarding), so the interface's default kernels run.</summary>
    private sealed class DefaultsOnly(ReferenceBackend r) : IBackend
    {
        public Storage Allocate(DType dtype, int length) => r.Allocate(dtype, length);
        public Storage Upload(Array data) => r.Upload(data);
        public void Download(Storage src, int srcOffset, Array dst, int count) => r.Download(src, srcOffset, dst, count);
        public void Fill(Storage dst, int offset, int count, double value) => r.Fill(dst, offset, count, value);
        public void CopyStrided(Strided src, Shape shape, Storage dst, int dstOffset) => r.CopyStrided(src, shape, dst, dstOffset);
        public void Unary(UnaryOp op, Storage x, int xOffset, Storage y, int yOffset, int n, double alpha) => r.Unary(op, x, xOffset, y, yOffset, n, alpha);
        public void Binary(BinaryOp op, Strided a, Strided b, Storage y, Shape shape) => r.Binary(op, a, b, y, shape);
        public void Where(Strided cond, Strided a, Strided b, Storage y, Shape shape) => r.Where(cond, a, b, y, shape);
        public void Reduce(ReduceOp op, Storage x, int xOffset, Storage y, int outer, int n, int inner) => r.Reduce(op, x, xOffset, y, outer, n, inner);
        public void Gemm(bool transA, bool transB, int m, int n, int k, double alpha, Storage a, int aOffset, int lda, int strideA,
            Storage b, int bOffset, int ldb, int strideB, double beta, Storage c, int cOffset, int ldc, int strideC, int batch) =>
            r.Gemm(transA, transB, m, n, k, alpha, a, aOffset, lda, strideA, b, bOffset, ldb, strideB, beta, c, cOffset, ldc, strideC, batch);
        public void Softmax(Storage x, Storage y, int rows, int n, bool log, int causalQuery) => r.Softmax(x, y, rows, n, log, causalQuery);
        public void SoftmaxBackward(Storage y, Storage dy, Storage dx, int rows, int n, bool log, int causalQuery) => r.SoftmaxBackward(y, dy, dx, rows, n, log, causalQuery);
        public void RmsNorm(Storage x, Storage w, Storage y, Storage rstd, int rows, int n, double eps) => r.RmsNorm(x, w, y, rstd, rows, n, eps);
        public void RmsNormBackward(Storage x, Storage w, Storage rstd, Storage dy, Storage dx, Storage dw, int rows, int n) => r.RmsNormBackward(x, w, rstd, dy, dx, dw, rows, n);
        public void IndexSelect(Storage src, Storage idx, Storage dst, int outer, int axisLen, int count, int inner) => r.IndexSelect(src, idx, dst, outer, axisLen, count, inner);
        public void IndexAdd(Storage dst, Storage idx, Storage src, int outer, int axisLen, int count, int inner) => r.IndexAdd(dst, idx, src, outer, axisLen, count, inner);
        public void Gather(Storage src, Storage idx, Storage dst, int outer, int axisLen, int count, int inner) => r.Gather(src, idx, dst, outer, axisLen, count, inner);
        public void ScatterAdd(Storage dst, Storage idx, Storage src, int outer, int axisLen, int count, int inner) => r.ScatterAdd(dst, idx, src, outer, axisLen, count, inner);
        public void TopK(Storage x, Storage values, Storage indices, int rows, int n, int k) => r.TopK(x, values, indices, rows, n, k);
        public void ArgSort(Storage x, Storage indices, int rows, int n, bool descending) => r.ArgSort(x, indices, rows, n, descending);
        public void CrossEntropyRows(Storage x, Storage targets, long ignoreIndex, Storage loss, Storage counted, Storage logSumExp, int rows, int n) =>
            r.CrossEntropyRows(x, targets, ignoreIndex, loss, counted, logSumExp, rows, n);
        public void CrossEntropyRowsBackward(Storage x, Storage targets, long ignoreIndex, Storage logSumExp, Storage g, Storage dx, int rows, int n) =>
            r.CrossEntropyRowsBackward(x, targets, ignoreIndex, logSumExp, g, dx, rows, n);
        public void Rope(Storage x, RopeLayout xLayout, Storage cos, Storage sin, Storage y, RopeLayout yLayout, int outer, int seq, int dim, bool inverse) =>
            r.Rope(x, xLayout, cos, sin, y, yLayout, outer, seq, dim, inverse);
        public void AdamW(Storage param, Storage grad, Storage m, Storage v, int n, double lr, double beta1, double beta2, double eps,
            double weightDecay, double biasCorrection1, double biasCorrection2) =>
            r.AdamW(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2);
    }

    private static readonly IBackend Defaults = new DefaultsOnly(K.Ref);

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(100_003)] // large enough to split across threads, with a tail
    public void SwiGluMatchesReference(int n)
    {
        var g = K.Rand(n, 1, -12, 12);
        var u = K.Rand(n, 2);
        var dy = K.Rand(n, 3);
        foreach (IBackend b in new IBackend[] { K.Cpu, Defaults })
        {
            var yRef = K.S(new float[n]);
            var y = K.S(K.Rand(n, 9)); // dirty: must be overwritten
            K.Ref.SwiGlu(K.S(g), K.S(u), yRef, n);
            b.SwiGlu(K.S(g), K.S(u), y, n);
            K.Close(K.F(yRef), K.F(y), 2e-6, 1e-6, "y");

            var dgRef = K.S(new float[n]);
            var duRef = K.S(new float[n]);
            K.Ref.SwiGluBackward(K.S(g), K.S(u), K.S(dy), dgRef, duRef, n);
            var dg = K.S(K.Rand(n, 10));
            var du = K.S(dy); // dUp aliasing dy
            b.SwiGluBackward(K.S(g), K.S(u), du, dg, du, n);
            K.Close(K.F(dgRef), K.F(dg), 2e-5, 1e-6, "dGate");
            K.Close(K.F(duRef), K.F(du), 2e-6, 1e-6, "dUp");
        }
    }

    [Theory]
    [InlineData(5, 2, 3)]
    [InlineData(600, 2, 96)] // large enough to split across threads
    [InlineData(64, 3, 17)]
    public void WeightedGatherSumMatchesReference(int tokens, int m, int d)
    {
        var rng = new Random(tokens * 31 + m);
        // Each row read by at most one pair; some pairs read none (−1) and some rows are read by no pair.
        int rowCount = tokens * m + 3;
        var perm = Enumerable.Range(0, rowCount).OrderBy(_ => rng.Next()).ToArray();
        var ix = new long[tokens * m];
        for (int i = 0; i < ix.Length; i++) ix[i] = rng.Next(5) == 0 ? -1 : perm[i];
        var rows = K.Rand(rowCount * d, 4);
        var w = K.Rand(tokens * m, 5, 0, 1);
        var g = K.Rand(tokens * d, 6);
        var outRef = K.S(new float[tokens * d]);
        K.Ref.WeightedGatherSum(K.S(rows), K.S(ix), K.S(w), outRef, tokens, m, d, rowCount);
        var drRef = K.S(new float[rowCount * d]);
        var dwRef = K.S(new float[tokens * m]);
        K.Ref.WeightedGatherSumBackward(K.S(rows), K.S(ix), K.S(w), K.S(g), drRef, dwRef, tokens, m, d, rowCount);
        foreach (IBackend b in new IBackend[] { K.Cpu, Defaults })
        {
            var o = K.S(K.Rand(tokens * d, 7)); // dirty outputs: every element must be written
            b.WeightedGatherSum(K.S(rows), K.S(ix), K.S(w), o, tokens, m, d, rowCount);
            K.Close(K.F(outRef), K.F(o), 1e-6, 1e-6, "out");
            var dr = K.S(K.Rand(rowCount * d, 8));
            var dw = K.S(K.Rand(tokens * m, 9));
            b.WeightedGatherSumBackward(K.S(rows), K.S(ix), K.S(w), K.S(g), dr, dw, tokens, m, d, rowCount);
            K.Close(K.F(drRef), K.F(dr), 1e-6, 1e-6, "dRows");
            K.Close(K.F(dwRef), K.F(dw), 1e-5, 1e-5, "dW");
            var dw2 = K.S(new float[tokens * m]);
            b.WeightedGatherSumBackward(K.S(rows), K.S(ix), K.S(w), K.S(g), null, dw2, tokens, m, d, rowCount);
            K.Close(K.F(dwRef), K.F(dw2), 1e-5, 1e-5, "dW only");
        }
    }

    [Fact]
    public void CpuKernelsAreBitIdenticalRunToRun()
    {
        int tokens = 700, m = 2, d = 64, rowCount = tokens * m;
        var ix = Enumerable.Range(0, rowCount).Select(i => (long)((i * 7919) % rowCount)).ToArray();
        var rows = K.Rand(rowCount * d, 1);
        var w = K.Rand(rowCount, 2);
        float[] Run()
        {
            var o = K.S(new float[tokens * d]);
            K.Cpu.WeightedGatherSum(K.S(rows), K.S(ix), K.S(w), o, tokens, m, d, rowCount);
            return K.F(o);
        }
        Assert.Equal(Run(), Run());
    }
}
