using PureMoE.Autograd;
using PureMoE.Testing;

namespace PureMoE.Engine.Tests.GradCheck;

public class AutogradBehaviourTests
{
    private static Tensor Leaf(params double[] values)
    {
        var t = Tensor.FromArray(values, values.Length);
        t.RequiresGrad = true;
        return t;
    }

    [Fact]
    public void GradientsAccumulateAcrossBackwardCalls()
    {
        var x = Leaf(1, 2, 3);
        x.Mul(x).Sum().Backward();            // 2x
        Assert.Equal(new double[] { 2, 4, 6 }, x.Grad!.ToDoubleArray());
        x.MulScalar(3).Sum().Backward();      // + 3
        Assert.Equal(new double[] { 5, 7, 9 }, x.Grad!.ToDoubleArray());
    }

    [Fact]
    public void AccumulatedGradientIsAnOwnedCopy()
    {
        // The first gradient is stored as a copy: later accumulation must not write into a tensor of the graph.
        var x = Leaf(1, 2);
        var seed = Tensor.FromArray(new double[] { 1, 1 }, 2);
        var y = x.Clone();   // Clone passes the upstream gradient through unchanged
        y.Backward(seed);
        y.Backward(seed);
        Assert.Equal(new double[] { 2, 2 }, x.Grad!.ToDoubleArray());
        Assert.Equal(new double[] { 1, 1 }, seed.ToDoubleArray());
    }

    [Fact]
    public void DiamondSumsBothPaths()
    {
        // y = exp(x)·sin-free diamond: a = 2x, b = x², y = Σ a·b = Σ 2x³ → dy/dx = 6x².
        var x = Leaf(1, -2, 0.5);
        var a = x.MulScalar(2);
        var b = x.Mul(x);
        a.Mul(b).Sum().Backward();
        Assert.Equal(new double[] { 6, 24, 1.5 }, x.Grad!.ToDoubleArray());
    }

    [Fact]
    public void SharedIntermediateUsedByTwoConsumers()
    {
        var x = Leaf(0.3, -0.7);
        var h = x.Exp();                                 // used twice below
        var y = h.Mul(h).Add(h.MulScalar(5)).Sum();      // Σ e^{2x} + 5e^x
        y.Backward();
        var xv = new[] { 0.3, -0.7 };
        var g = x.Grad!.ToDoubleArray();
        for (int i = 0; i < 2; i++) Assert.Equal(2 * Math.Exp(2 * xv[i]) + 5 * Math.Exp(xv[i]), g[i], 1e-14);
    }

    [Fact]
    public void NoGradScopeRecordsNothing()
    {
        var x = Leaf(1, 2);
        Tensor y;
        using (Tensor.NoGrad())
        {
            Assert.False(GradMode.IsEnabled);
            y = x.Exp().Sum();
        }
        Assert.True(GradMode.IsEnabled);
        Assert.False(y.RequiresGrad);
        Assert.True(y.IsLeaf);
        var ex = Assert.Throws<InvalidOperationException>(() => y.Backward());
        Assert.Contains("does not require a gradient", ex.Message);
        // Recording resumes after the scope; nested scopes restore correctly.
        using (Tensor.NoGrad())
        using (Tensor.NoGrad()) { }
        Assert.True(x.Exp().RequiresGrad);
    }

    [Fact]
    public void DetachStopsGradients()
    {
        var x = Leaf(1, 2, 3);
        var d = x.Detach();
        Assert.False(d.RequiresGrad);
        Assert.True(d.IsLeaf);
        // y = x·stop(x): the gradient is only through the first factor.
        x.Mul(x.Detach()).Sum().Backward();
        Assert.Equal(new double[] { 1, 2, 3 }, x.Grad!.ToDoubleArray());
        // The detached tensor shares the data.
        Assert.Equal(x.ToDoubleArray(), d.ToDoubleArray());
    }

    [Fact]
    public void BackwardOnANonScalarNamesTheShape()
    {
        var x = Tensor.FromArray(new double[6], 2, 3);
        x.RequiresGrad = true;
        var ex = Assert.Throws<InvalidOperationException>(() => x.Exp().Backward());
        Assert.Contains("Backward", ex.Message);
        Assert.Contains("[2,3]", ex.Message);
    }

    [Fact]
    public void BackwardWithAGradientOfTheWrongShapeNamesBoth()
    {
        var x = Leaf(1, 2, 3);
        var ex = Assert.Throws<ArgumentException>(() => x.Exp().Backward(Tensor.FromArray(new double[2], 2)));
        Assert.Contains("[2]", ex.Message);
        Assert.Contains("[3]", ex.Message);
    }

    [Fact]
    public void BackwardWithAGradientOfAnotherDTypeNamesBoth()
    {
        var x = Leaf(1, 2, 3);
        var ex = Assert.Throws<ArgumentException>(() => x.Exp().Backward(Tensor.Ones(new Shape(3))));
        Assert.Contains("float32", ex.Message);
        Assert.Contains("float64", ex.Message);
    }

    [Fact]
    public void ZeroGradClears()
    {
        var x = Leaf(1, 2);
        x.Sum().Backward();
        Assert.NotNull(x.Grad);
        x.ZeroGrad();
        Assert.Null(x.Grad);
        x.MulScalar(4).Sum().Backward();
        Assert.Equal(new double[] { 4, 4 }, x.Grad!.ToDoubleArray());
    }

    [Fact]
    public void OnlyLeavesRequiringGradGetGradients()
    {
        var x = Leaf(1, 2);
        var w = Tensor.FromArray(new double[] { 3, 4 }, 2);    // a constant
        var h = x.Mul(w);
        h.Sum().Backward();
        Assert.Null(w.Grad);
        Assert.Null(h.Grad);                                     // non-leaf: not retained
        Assert.Equal(new double[] { 3, 4 }, x.Grad!.ToDoubleArray());
    }

    [Fact]
    public void RequiresGradRules()
    {
        var ids = Tensor.FromArray(new long[] { 1 }, 1);
        Assert.Throws<InvalidOperationException>(() => ids.RequiresGrad = true);
        var x = Leaf(1);
        var y = x.Exp();
        Assert.True(y.RequiresGrad);
        Assert.False(y.IsLeaf);
        Assert.Throws<InvalidOperationException>(() => y.RequiresGrad = false);
    }

    [Fact]
    public void ScalarLeafBackward()
    {
        var x = Tensor.Scalar(2.5, DType.Float64);
        x.RequiresGrad = true;
        x.Backward();
        Assert.Equal(1.0, x.Grad!.Item());
    }

    [Fact]
    public void Float32LeafThroughFloat64ComputationGetsFloat32Gradient()
    {
        var x = Tensor.FromArray(new float[] { 1, 2 }, 2);
        x.RequiresGrad = true;
        x.To(DType.Float64).Square().Sum().Backward();
        Assert.Equal(DType.Float32, x.Grad!.DType);
        Assert.Equal(new float[] { 2, 4 }, x.Grad.ToArray<float>());
    }

    [Fact]
    public void DeepChainDoesNotOverflowTheStack()
    {
        var x = Leaf(1);
        var y = x;
        for (int i = 0; i < 20000; i++) y = y.AddScalar(0);
        y.Sum().Backward();
        Assert.Equal(1.0, x.Grad!.Item());
    }

    [Fact]
    public void GradientCheckOfAComposite()
    {
        // A small MLP-ish graph with shared weights and broadcasts: everything together.
        var rng = new Rng(9);
        var x = GradChecker.Randn(new Shape(3, 4), rng);
        var w = GradChecker.Randn(new Shape(4, 4), rng, 0.5);
        var bias = GradChecker.Randn(new Shape(4), rng);
        GradChecker.Check("composite", t =>
        {
            var h = t[0].MatMul(t[1]).Add(t[2]).Silu();
            var h2 = h.MatMul(t[1].T).RmsNorm(t[2], 1e-6);
            return h2.Softmax(-1).Mul(h).Sum(0);
        }, 4, x, w, bias);
    }
}
