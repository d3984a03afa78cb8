using PureMoE.Backends.Ilgpu;
using PureMoE.Engine.Tests.Backends;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>End-to-end ops (forward and backward through autograd) on the ILGPU CPU emulator.</summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class IlgpuCpuOpsTests : IlgpuOpsTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.IlgpuCpu;
}

/// <summary>The same tests on the emulator shaped like a CUDA GPU (32-lane warps, 256-thread groups).</summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class CudaShapedOpsTests : IlgpuOpsTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.IlgpuCpu;

    /// <inheritdoc />
    protected override bool CudaShaped => true;
}

/// <summary>The same end-to-end ops on CUDA device 0; skipped where there is none.</summary>
[Trait("Device", "Cuda")]
[Collection("Ilgpu")]
public sealed class CudaOpsTests : IlgpuOpsTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.Cuda;
}

/// <summary>
/// Small graphs run on an ILGPU device equal the same graphs on <see cref="Device.Cpu"/> (values and gradients),
/// plus device moves and the errors for mixed devices and float64.
/// </summary>
public abstract class IlgpuOpsTests : IlgpuTestBase
{
    private static Tensor Leaf(Tensor t)
    {
        t.RequiresGrad = true;
        return t;
    }

    /// <summary>loss = Σ softmax(x·W + b) ⊙ target + mean(silu(rmsnorm(x·W, g))), on one device.</summary>
    private static (float Loss, float[] Gx, float[] Gw, float[] Gb, float[] Gg) Run(Device d, float[] x, float[] w, float[] b, float[] g, float[] target)
    {
        var tx = Leaf(Tensor.FromHost(x, [5, 17], d));
        var tw = Leaf(Tensor.FromHost(w, [17, 33], d));
        var tb = Leaf(Tensor.FromHost(b, [33], d));
        var tg = Leaf(Tensor.FromHost(g, [33], d));
        var tt = Tensor.FromHost(target, [5, 33], d);
        var h = tx.MatMul(tw);
        var loss = h.Add(tb).Softmax().Mul(tt).Sum().Add(h.RmsNorm(tg, 1e-5).Silu().Mean());
        loss.Backward();
        return ((float)loss.Item(), tx.Grad!.ToFloatArray(), tw.Grad!.ToFloatArray(), tb.Grad!.ToFloatArray(), tg.Grad!.ToFloatArray());
    }

    [Fact]
    public void ConcatCopiesBlocksAndInterleavesPieces()
    {
        // Along axis 0 each piece is one block of the result (a strided copy, so a view at an offset, an empty piece
        // and a transposed one, and −0 stays −0); along axis 1 the pieces interleave (added into zeros). Int64 too.
        var x = K.Rand(4 * 6, 1, -1, 1);
        x[0] = -0f;
        float A(int i, int j) => x[i * 6 + j];           // a = x as [4, 6]
        float Bt(int i, int j) => x[j * 4 + i];          // x as [6, 4], transposed to [4, 6]
        var rows = new List<float>();
        for (int i = 0; i < 4; i++) for (int j = 0; j < 6; j++) rows.Add(A(i, j));
        for (int i = 1; i < 3; i++) for (int j = 0; j < 6; j++) rows.Add(A(i, j));
        for (int i = 0; i < 4; i++) for (int j = 0; j < 6; j++) rows.Add(Bt(i, j));
        var cols = new List<float>();
        for (int i = 0; i < 4; i++) { for (int j = 0; j < 6; j++) cols.Add(A(i, j)); for (int j = 2; j < 5; j++) cols.Add(A(i, j)); }
        long[] ids = [5, -6, 7, 8, 9, 10];
        foreach (var d in new[] { Device.Cpu, Device.CpuReference, Dev })
        {
            var a = Tensor.FromHost(x, [4, 6], d);
            var bt = Tensor.FromHost(x, [6, 4], d).Transpose(0, 1);
            var empty = Tensor.Zeros(new Shape(0, 6), DType.Float32, d);
            var byRows = Tensor.Concat([a, a.Narrow(0, 1, 2), empty, bt], 0).ToFloatArray();
            Assert.Equal(rows.ToArray(), byRows);
            Assert.Equal(BitConverter.SingleToInt32Bits(-0f), BitConverter.SingleToInt32Bits(byRows[0]));
            Assert.Equal(cols.ToArray(), Tensor.Concat([a, a.Narrow(1, 2, 3)], 1).ToFloatArray());
            var l = Tensor.FromHost(ids, [2, 3], d);
            Assert.Equal(ids.Concat(ids).ToArray(), Tensor.Concat([l, l], 0).ToLongArray());
            Assert.Equal(new long[] { 5, -6, 7, 5, -6, 7, 8, 9, 10, 8, 9, 10 }, Tensor.Concat([l, l], 1).ToLongArray());
        }
    }

    [Fact]
    public void MatMulSoftmaxRmsNormGraphMatchesCpu()
    {
        var x = K.Rand(5 * 17, 1, -1, 1);
        var w = K.Rand(17 * 33, 2, -0.5f, 0.5f);
        var b = K.Rand(33, 3);
        var g = K.Rand(33, 4, 0.5f, 1.5f);
        var t = K.Rand(5 * 33, 5);
        var cpu = Run(Device.Cpu, x, w, b, g, t);
        var dev = Run(Dev, x, w, b, g, t);
        double tol = 2e-5 * Slack;
        K.Close([cpu.Loss], [dev.Loss], tol, tol, "loss");
        K.Close(cpu.Gx, dev.Gx, tol, tol, "dx");
        K.Close(cpu.Gw, dev.Gw, tol, tol, "dW");
        K.Close(cpu.Gb, dev.Gb, tol, tol, "db");
        K.Close(cpu.Gg, dev.Gg, tol, tol, "dg");
    }

    /// <summary>
    /// Block-causal attention (blocks of 3 of 7 queries, 9 keys, grouped heads) on the device against the CPU, in the
    /// output and the gradients of q, k and v: the products at offsets into the score matrix and the causal softmax
    /// backward that reads only unmasked columns.
    /// </summary>
    [Theory]
    [InlineData(3)]
    [InlineData(7)]
    public void BlockCausalAttentionMatchesCpu(int block)
    {
        var q = K.Rand(2 * 4 * 7 * 8, 21);
        var k = K.Rand(2 * 2 * 9 * 8, 22);
        var v = K.Rand(2 * 2 * 9 * 8, 23);
        var target = K.Rand(2 * 4 * 7 * 8, 24);
        float[][] Run3(Device d)
        {
            var (tq, tk, tv) = (Leaf(Tensor.FromHost(q, [2, 4, 7, 8], d)), Leaf(Tensor.FromHost(k, [2, 2, 9, 8], d)), Leaf(Tensor.FromHost(v, [2, 2, 9, 8], d)));
            var y = Tensor.CausalAttention(tq, tk, tv, block);
            y.Mul(Tensor.FromHost(target, [2, 4, 7, 8], d)).Sum().Backward();
            return [y.ToFloatArray(), tq.Grad!.ToFloatArray(), tk.Grad!.ToFloatArray(), tv.Grad!.ToFloatArray()];
        }
        var cpu = Run3(Device.Cpu);
        var dev = Run3(Dev);
        string[] names = ["y", "dq", "dk", "dv"];
        for (int i = 0; i < names.Length; i++) K.Close(cpu[i], dev[i], 2e-5 * Slack, 2e-5 * Slack, $"attention {names[i]} block {block}");
    }

    [Fact]
    public void CrossEntropyTopKAndIndexOpsMatchCpu()
    {
        var logits = K.Rand(7 * 9, 6);
        var targets = RandIdx(7, 9, 7);
        var ids = RandIdx(11, 7, 8);
        float[] Run2(Device d, out long[] top, out float loss)
        {
            var l = Leaf(Tensor.FromHost(logits, [7, 9], d));
            var tgt = Tensor.FromHost(targets, [7], d);
            var ce = l.CrossEntropy(tgt);
            var (vals, idx) = l.TopK(3);
            var emb = l.Embedding(Tensor.FromHost(ids, [11], d)); // IndexSelect forward, IndexAdd backward
            ce.Add(vals.Sum()).Add(emb.Square().Mean()).Backward();
            top = idx.ToArray<long>();
            loss = (float)ce.Item();
            return l.Grad!.ToFloatArray();
        }
        var gc = Run2(Device.Cpu, out var topC, out var lossC);
        var gd = Run2(Dev, out var topD, out var lossD);
        Assert.Equal(topC, topD);
        K.Close([lossC], [lossD], 1e-5 * Slack, 1e-6, "ce");
        K.Close(gc, gd, 1e-5 * Slack, 1e-6 * Slack, "dlogits");
    }

    [Fact]
    public void CrossEntropyWithIgnoredTargetsMatchesCpu()
    {
        // The device computes the mask and the count itself (no read of the targets); rows with −100 leave the mean.
        var logits = K.Rand(6 * 40, 9, -3, 3);
        long[] targets = [3, -100, 39, 0, -100, 17];
        (float Loss, float[] Grad) Run(Device d)
        {
            var l = Leaf(Tensor.FromHost(logits, [2, 3, 40], d));
            var ce = l.CrossEntropy(Tensor.FromHost(targets, [2, 3], d));
            ce.Backward();
            return ((float)ce.Item(), l.Grad!.ToFloatArray());
        }
        var (lc, gc) = Run(Device.Cpu);
        var (ld, gd) = Run(Dev);
        K.Close([lc], [ld], 1e-5 * Slack, 1e-6, "loss");
        K.Close(gc, gd, 1e-5 * Slack, 1e-6 * Slack, "dlogits");
        Assert.All(gd.Skip(40).Take(40), v => Assert.Equal(0f, v));   // an ignored row gets no gradient
    }

    [Fact]
    public void ToMovesBetweenHostAndDeviceAndBack()
    {
        var x = Tensor.FromArray(K.Rand(12, 9), 3, 4);
        var onDev = x.Transpose(0, 1).To(Dev); // a non-contiguous view moves as its values
        Assert.Equal(Dev, onDev.Device);
        Assert.Same(onDev, onDev.To(Dev));
        var back = onDev.To(Device.Cpu);
        Assert.Equal(x.Transpose(0, 1).Contiguous().ToArray<float>(), back.ToArray<float>());
        var ids = Tensor.Arange(5, device: Dev);
        Assert.Equal(new long[] { 0, 1, 2, 3, 4 }, ids.ToArray<long>());
        Assert.Equal(new float[] { 0, 1, 2, 3, 4 }, ids.To(DType.Float32).ToArray<float>());
        Assert.Equal(new double[] { 0, 1, 2, 3, 4 }, ids.ToDoubleArray());

        // The gradient of a move goes back to the source device.
        var leaf = Leaf(Tensor.FromArray([1f, 2f, 3f]));
        leaf.To(Dev).Square().Sum().Backward();
        Assert.Equal(Device.Cpu, leaf.Grad!.Device);
        Assert.Equal(new[] { 2f, 4f, 6f }, leaf.Grad.ToArray<float>());
    }

    [Fact]
    public void MixingDevicesAndFloat64AreClearErrors()
    {
        var a = Tensor.FromArray([1f, 2f]);
        var b = a.To(Dev);
        var e = Assert.Throws<InvalidOperationException>(() => a.Add(b));
        Assert.Contains("different devices", e.Message);
        var f = Assert.Throws<NotSupportedException>(() => Tensor.FromArray(new double[] { 1, 2 }).To(Dev));
        Assert.Contains("float64", f.Message);
    }

    [Fact]
    public void MissingDevicesNameWhatExists()
    {
        _ = Dev;
        var e = Assert.Throws<InvalidOperationException>(() => Device.Cuda(99));
        Assert.Contains("Device.Cuda(99)", e.Message);
        Assert.Contains("CUDA device(s)", e.Message);
        Assert.Equal("ilgpu-cpu", Device.IlgpuCpu.ToString());
        Assert.True(Device.IlgpuCpu.IsIlgpu && !Device.IlgpuCpu.IsHost);
    }

    [Fact]
    public void GroupSizesComeFromTheAccelerator()
    {
        var b = B;
        Assert.Equal(b.Accelerator.WarpSize, b.WarpSize);
        Assert.True(b.GroupSize <= b.Accelerator.MaxNumThreadsPerGroup);
        Assert.True((b.GroupSize & (b.GroupSize - 1)) == 0);
        var (tx, ty) = b.GemmThreads;
        Assert.Equal(b.GroupSize, tx * ty);
    }
}
