using PureMoE.Backends.Ilgpu;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>
/// The scalar math the ILGPU kernels share (<c>Act</c>), run here as plain .NET code against float64 Math. On a GPU
/// the same code runs with ILGPU's exp (<c>ex2.approx.f32</c>, about 2 ulp), which adds at most ~2e-7 relative to
/// what is measured here (tanh's exp branch starts at 0.625, where tanh ≥ 0.55 damps an error in e^{2|x|} by 4).
/// </summary>
public sealed class IlgpuMathTests
{
    [Fact]
    public void TanhIsWithinAFewUlpOfFloat64Tanh()
    {
        double worst = 0, at = 0;
        // Every 1/4096 up to 12 (past 9.01, tanh rounds to 1 in float), and powers of two down to the subnormals.
        var xs = Enumerable.Range(0, 12 * 4096).Select(i => i / 4096f)
            .Concat(Enumerable.Range(1, 140).Select(e => MathF.Pow(2f, -e)))
            .Concat([0.6249999f, 0.625f, 0.6250001f]);
        foreach (float x0 in xs)
            foreach (float x in new[] { x0, -x0 })
            {
                double exact = Math.Tanh(x);
                float got = Act.Tanh(x);
                double rel = exact == 0 ? Math.Abs(got) : Math.Abs(got - exact) / Math.Abs(exact);
                if (rel > worst) (worst, at) = (rel, x);
            }
        Assert.True(worst < 3e-7, $"tanh: relative error {worst:E2} at x = {at:R}");
    }

    [Fact]
    public void TanhKeepsTheSpecialValues()
    {
        Assert.True(float.IsNaN(Act.Tanh(float.NaN)));
        Assert.Equal(1f, Act.Tanh(float.PositiveInfinity));
        Assert.Equal(-1f, Act.Tanh(float.NegativeInfinity));
        Assert.Equal(1f, Act.Tanh(50f));
        Assert.True(float.IsNegative(Act.Tanh(-0f)) && Act.Tanh(-0f) == 0f, "tanh(-0) = -0");
        Assert.Equal(0f, Act.Tanh(0f));
    }
}
