using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using PureMoE.Testing;

namespace PureMoE.Engine.Tests.GradCheck;

/// <summary>How an operand reaches MatMul: as stored, as x.T of a stored [.., cols, rows], or permuted from [rows, B, cols].</summary>
public enum Layout { Plain, Transposed, Permuted }

public sealed record MatMulCase(int[] BatchA, int[] BatchB, int M, int K, int N, Layout LayoutA, Layout LayoutB, ulong Seed, bool Reference)
{
    public Device Device => Reference ? Device.CpuReference : Device.Cpu;

    /// <summary>The stored shape of an operand [batch.., rows, cols] in a layout.</summary>
    public static int[] Stored(int[] batch, int rows, int cols, Layout layout) => layout switch
    {
        Layout.Plain => [.. batch, rows, cols],
        Layout.Transposed => [.. batch, cols, rows],
        _ => [rows, batch[0], cols],
    };

    /// <summary>The operand view of a stored tensor.</summary>
    public static Tensor View(Tensor stored, Layout layout) => layout switch
    {
        Layout.Plain => stored,
        Layout.Transposed => stored.T,
        _ => stored.Permute(1, 0, 2),
    };

    public override string ToString() =>
        $"a=[{string.Join(",", BatchA)}|{M},{K}] {LayoutA} b=[{string.Join(",", BatchB)}|{K},{N}] {LayoutB} seed={Seed} {Device}";
}

public static class MatMulArbitraries
{
    private static Gen<Layout> LayoutFor(int[] batch) =>
        batch.Length == 1 ? Gen.Elements(Layout.Plain, Layout.Transposed, Layout.Permuted) : Gen.Elements(Layout.Plain, Layout.Transposed);

    public static Arbitrary<MatMulCase> MatMulCase() =>
        (from full in ShapeGen.Dims(0, 2, 3)
         from ba in ShapeGen.Derived(full)
         from bb in ShapeGen.Derived(full)
         from m in Gen.Choose(1, 4)
         from k in Gen.Choose(1, 4)
         from n in Gen.Choose(1, 4)
         from la in LayoutFor(ba)
         from lb in LayoutFor(bb)
         from s in ShapeGen.Seed
         from r in ShapeGen.Reference
         select new MatMulCase(ba, bb, m, k, n, la, lb, s, r)).ToArbitrary();
}

public class MatMulGradTests
{
    private static void Run(MatMulCase c)
    {
        var rng = new Rng(c.Seed);
        var a = GradChecker.Randn(PureMoE.Engine.Tests.GradCheck.MatMulCase.Stored(c.BatchA, c.M, c.K, c.LayoutA), rng, device: c.Device);
        var b = GradChecker.Randn(PureMoE.Engine.Tests.GradCheck.MatMulCase.Stored(c.BatchB, c.K, c.N, c.LayoutB), rng, device: c.Device);
        GradChecker.Check($"MatMul {c}", t => MatMulCase.View(t[0], c.LayoutA).MatMul(MatMulCase.View(t[1], c.LayoutB)), c.Seed, a, b);
    }

    [Property(Arbitrary = [typeof(MatMulArbitraries)], MaxTest = 250)]
    public void MatMulRandomBatchesAndLayouts(MatMulCase c) => Run(c);

    [Theory]
    [InlineData(new int[0], new int[0], Layout.Plain, Layout.Plain)]           // 2-D
    [InlineData(new[] { 3 }, new[] { 3 }, Layout.Plain, Layout.Plain)]         // batched
    [InlineData(new[] { 2, 3 }, new[] { 2, 3 }, Layout.Transposed, Layout.Transposed)]
    [InlineData(new[] { 2, 1 }, new[] { 3 }, Layout.Plain, Layout.Plain)]      // broadcast batch
    [InlineData(new[] { 1, 3 }, new[] { 2, 1 }, Layout.Transposed, Layout.Plain)]
    [InlineData(new[] { 2, 3 }, new int[0], Layout.Plain, Layout.Plain)]       // batched x 2-D (folded GEMM)
    [InlineData(new[] { 2, 3 }, new int[0], Layout.Transposed, Layout.Transposed)]
    [InlineData(new int[0], new[] { 2, 3 }, Layout.Plain, Layout.Plain)]       // 2-D x batched
    [InlineData(new int[0], new[] { 3 }, Layout.Transposed, Layout.Permuted)]
    [InlineData(new[] { 3 }, new[] { 3 }, Layout.Permuted, Layout.Permuted)]   // permuted batch views
    [InlineData(new[] { 3 }, new int[0], Layout.Permuted, Layout.Transposed)]
    public void MatMulNamedCases(int[] batchA, int[] batchB, Layout la, Layout lb)
    {
        foreach (bool reference in new[] { false, true })
            Run(new MatMulCase(batchA, batchB, 3, 4, 2, la, lb, 11, reference));
    }

    [Fact]
    public void MatMulOfNarrowedOperands()
    {
        // Offsets into storage and row strides larger than the row length.
        var a = GradChecker.Randn(new Shape(4, 6), new Rng(1));
        var b = GradChecker.Randn(new Shape(5, 7), new Rng(2));
        GradChecker.Check("MatMul narrowed", t => t[0].Narrow(0, 1, 3).Narrow(1, 2, 4).MatMul(t[1].Narrow(0, 1, 4).Narrow(1, 3, 2)), 5, a, b);
        GradChecker.Check("MatMul narrowed transposed", t => t[0].Narrow(1, 1, 3).T.MatMul(t[1].Narrow(1, 2, 3).Narrow(0, 1, 4).T.T), 5, a, b);
    }

    [Fact]
    public void MatMulFoldedPathWithOffsetAndOddSizeOneStrides()
    {
        // Batched a (contiguous, but starting at an offset) times a 2-D b: the folded single-GEMM path.
        var a = GradChecker.Randn(new Shape(3, 2, 3, 4), new Rng(1));
        var b = GradChecker.Randn(new Shape(4, 2), new Rng(2));
        GradChecker.Check("MatMul folded, offset", t => t[0].Narrow(0, 1, 2).MatMul(t[1]), 5, a, b);
        // A permute that only moves a size-1 dim is still contiguous (with an unusual stride on that dim).
        var a1 = GradChecker.Randn(new Shape(4, 1, 3), new Rng(3));
        var b1 = GradChecker.Randn(new Shape(3, 2), new Rng(4));
        GradChecker.Check("MatMul folded, size-1 permute", t => t[0].Permute(1, 0, 2).MatMul(t[1]), 5, a1, b1);
        GradChecker.Check("MatMul 2-D x folded", t => t[1].T.MatMul(t[0].Permute(1, 2, 0)), 5, a1, b1);
    }

    [Fact]
    public void MatMulOfANarrowedBatchTimesAMatrixFoldsAfterACopy()
    {
        // The tied lm_head: hidden states without their last position ([B, S−1, d] of [B, S, d], not contiguous)
        // times Eᵀ. Gradients against finite differences, and dB is the folded product's (one GEMM over all rows),
        // not a batched one summed over the batch.
        var h = GradChecker.Randn(new Shape(3, 5, 4), new Rng(7));
        var e = GradChecker.Randn(new Shape(6, 4), new Rng(8));
        GradChecker.Check("MatMul narrowed batch x matrix", t => t[0].Narrow(1, 0, 4).MatMul(t[1].T), 5, h, e);

        var hf = Tensor.Randn(new Shape(3, 5, 4), new Rng(9));
        var ef = Tensor.Randn(new Shape(6, 4), new Rng(10));
        hf.RequiresGrad = ef.RequiresGrad = true;
        var g = Tensor.Randn(new Shape(3, 4, 6), new Rng(11));
        var y = hf.Narrow(1, 0, 4).MatMul(ef.T);
        y.Backward(g);
        var dense = hf.Detach().Narrow(1, 0, 4).Contiguous();
        Assert.Equal(dense.MatMul(ef.Detach().T).ToArray<float>(), y.ToArray<float>());
        var folded = dense.Reshape(-1, 4).T.MatMul(g.Reshape(-1, 6));    // dEᵀ [4, 6]
        Assert.Equal(folded.T.Contiguous().ToArray<float>(), ef.Grad!.ToArray<float>());
    }

    [Fact]
    public void MatMulWithExpandedBatchOperand()
    {
        var a = GradChecker.Randn(new Shape(1, 3, 4), new Rng(1));
        var b = GradChecker.Randn(new Shape(2, 4, 2), new Rng(2));
        GradChecker.Check("MatMul expanded", t => t[0].Expand(new Shape(2, 3, 4)).MatMul(t[1]), 5, a, b);
        var a4 = GradChecker.Randn(new Shape(2, 1, 3, 4), new Rng(3));
        var b4 = GradChecker.Randn(new Shape(1, 3, 4, 2), new Rng(4));
        GradChecker.Check("MatMul 4-D broadcast", t => t[0].MatMul(t[1]), 5, a4, b4);
    }
}

/// <summary>Tensor.Linear (x·Wᵀ): gradients, equality with MatMul(W.T), and the weight's gradient kept without a copy.</summary>
[Collection("Ilgpu")] // one test counts launches on Device.IlgpuCpu, which serves one thread at a time
public class LinearGradTests
{
    [Theory]
    [InlineData(new[] { 3, 4 }, 2, false)]      // [rows, in]
    [InlineData(new[] { 2, 3, 4 }, 5, false)]   // batched rows, folded into one GEMM
    [InlineData(new[] { 4 }, 3, true)]          // one vector; reference backend
    [InlineData(new[] { 2, 0, 4 }, 3, false)]   // no rows
    public void LinearGradientsMatchFiniteDifferences(int[] xShape, int outF, bool reference)
    {
        var device = reference ? Device.CpuReference : Device.Cpu;
        var rng = new Rng(7);
        var x = GradChecker.Randn(new Shape(xShape), rng, device: device);
        var w = GradChecker.Randn(new Shape(outF, xShape[^1]), rng, device: device);
        GradChecker.Check($"Linear x{string.Join(",", xShape)} out {outF}", t => t[0].Linear(t[1]), 5, x, w);
    }

    [Fact]
    public void LinearIsMatMulByTheTransposedWeightAndHandsTheWeightItsOwnGradient()
    {
        var rng = new Rng(3);
        var x = Tensor.Randn(new Shape(2, 5, 6), rng);
        var w = Tensor.Randn(new Shape(4, 6), rng);
        x.RequiresGrad = true;
        w.RequiresGrad = true;
        var y = x.Linear(w);
        Assert.Equal(new Shape(2, 5, 4), y.Shape);
        var expected = x.MatMul(w.T);
        Assert.Equal(expected.ToFloatArray(), y.ToFloatArray());
        y.Square().Sum().Backward();
        var (gx, gw) = (x.Grad!.ToFloatArray(), w.Grad!.ToFloatArray());
        x.ZeroGrad();
        w.ZeroGrad();
        expected.Square().Sum().Backward();
        PureMoE.Engine.Tests.Backends.K.Close(x.Grad!.ToFloatArray(), gx, 1e-6, 1e-6, "dx");
        PureMoE.Engine.Tests.Backends.K.Close(w.Grad!.ToFloatArray(), gw, 1e-6, 1e-6, "dw");
    }

    [Fact]
    [Trait("Device", "IlgpuCpu")]
    public void TheWeightKeepsTheBackwardsBufferAsItsGradientWithoutACopy()
    {
        // Counted on an ILGPU device, where every copy is a launch: x.MatMul(w.T) hands the weight a transposed view
        // of its gradient, which it copies; x.Linear(w) hands it an [out, in] buffer, which it keeps.
        var device = Device.IlgpuCpu;
        var rng = new Rng(5);
        var x = Tensor.Randn(new Shape(3, 4), rng).To(device);
        var w = Tensor.Randn(new Shape(2, 4), rng).To(device);
        w.RequiresGrad = true;
        var seed = Tensor.Ones(new Shape(3, 2), device: device);
        long Copies(Func<Tensor> forward)
        {
            w.ZeroGrad();
            var y = forward();
            long before = device.LaunchesByKernel.GetValueOrDefault("copyF");
            y.Backward(seed);
            return device.LaunchesByKernel.GetValueOrDefault("copyF") - before;
        }
        Assert.Equal(1, Copies(() => x.MatMul(w.T)));
        Assert.Equal(0, Copies(() => x.Linear(w)));
    }

    [Fact]
    public void LinearShapeErrorsNameBothShapes()
    {
        var e = Assert.Throws<ArgumentException>(() => Tensor.Zeros(new Shape(3, 4)).Linear(Tensor.Zeros(new Shape(2, 5))));
        Assert.Equal("Linear: input [3,4] and weight [2,5]: needs an input [..., in] and a weight [out, in]", e.Message);
    }
}
