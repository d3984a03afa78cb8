using PureMoE.Backends;
using PureMoE.Testing;

namespace PureMoE.Engine.Tests.GradCheck;

/// <summary>The checker must catch wrong gradients (else every passing check proves nothing).</summary>
public class GradCheckerSelfTests
{
    // exp with a backward off by 0.01 %.
    private static Tensor SlightlyWrongExp(Tensor x)
    {
        var y = Tensor.UnaryKernel(UnaryOp.Exp, x);
        return Tensor.Record("WrongExp", y, [x], g => [g.Mul(y).MulScalar(1.0001)]);
    }

    // a gradient that forgets one element.
    private static Tensor DropsLastElement(Tensor x)
    {
        var y = Tensor.UnaryKernel(UnaryOp.MulScalar, x, 2);
        return Tensor.Record("Drops", y, [x], g =>
        {
            var d = g.MulScalar(2).ToDoubleArray();
            d[^1] = 0;
            return [Tensor.FromHost(d, x.Shape.ToArray(), x.Device)];
        });
    }

    [Fact]
    public void CatchesASmallRelativeError()
    {
        var x = GradChecker.Randn(new Shape(3, 4), new Rng(1));
        var ex = Assert.Throws<GradCheckException>(() => GradChecker.Check("WrongExp", t => SlightlyWrongExp(t[0]), 7, x));
        Assert.Contains("GradCheck WrongExp: input 0 [3,4] element", ex.Message);
        Assert.Contains("analytic", ex.Message);
        Assert.Contains("numeric", ex.Message);
    }

    [Fact]
    public void NamesTheFailingElement()
    {
        var x = GradChecker.Randn(new Shape(2, 3), new Rng(2));
        var ex = Assert.Throws<GradCheckException>(() => GradChecker.Check("Drops", t => DropsLastElement(t[0]), 7, x));
        Assert.Contains("element 5 [1,2]", ex.Message);
        Assert.Contains("analytic 0,", ex.Message);
    }

    [Fact]
    public void CatchesAMissingGradient()
    {
        var x = GradChecker.Randn(new Shape(3), new Rng(3));
        var y = GradChecker.Randn(new Shape(3), new Rng(4));
        // The output depends on input 1 through a detached path: its analytic gradient is missing.
        var ex = Assert.Throws<GradCheckException>(() => GradChecker.Check("Detached", t => t[0].Mul(t[1].Detach()).Add(t[1]), 1, x, y));
        Assert.Contains("input 1", ex.Message);
    }

    [Fact]
    public void PassesACorrectComposite()
    {
        var x = GradChecker.Randn(new Shape(2, 3), new Rng(5));
        var w = GradChecker.Randn(new Shape(3, 4), new Rng(6));
        GradChecker.Check("tanh(xW)", t => t[0].MatMul(t[1]).Tanh(), 3, x, w);
    }

    [Fact]
    public void LeavesTheCallersInputsAlone()
    {
        var x = GradChecker.Randn(new Shape(4), new Rng(8));
        var before = x.ToDoubleArray();
        GradChecker.Check("Exp", t => t[0].Exp(), 3, x);
        Assert.Equal(before, x.ToDoubleArray());
        Assert.Null(x.Grad);
    }

    [Fact]
    public void RejectsFloat32Inputs()
    {
        var x = Tensor.Zeros(new Shape(2));
        var ex = Assert.Throws<ArgumentException>(() => GradChecker.Check("Exp", t => t[0].Exp(), 3, x));
        Assert.Contains("float64", ex.Message);
    }
}
