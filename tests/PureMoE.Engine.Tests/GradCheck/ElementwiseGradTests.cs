using FsCheck.Xunit;
using PureMoE.Testing;

namespace PureMoE.Engine.Tests.GradCheck;

/// <summary>How many random cases each property runs (keeps the float64 suite fast).</summary>
internal static class Runs
{
    public const int Many = 150;
    public const int Some = 80;
    public const int Few = 30;
}

public class ElementwiseGradTests
{
    private static void Binary(string op, BroadcastCase c, Func<Tensor, Tensor, Tensor> f, Func<Shape, Rng, Device, Tensor>? makeA = null,
        Func<Shape, Rng, Device, Tensor>? makeB = null)
    {
        var rng = c.Rng();
        var a = (makeA ?? ((s, r, d) => GradChecker.Randn(s, r, device: d)))(c.ShapeA, rng, c.Device);
        var b = (makeB ?? ((s, r, d) => GradChecker.Randn(s, r, device: d)))(c.ShapeB, rng, c.Device);
        GradChecker.Check($"{op} {c}", x => f(x[0], x[1]), c.Seed, a, b);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void Add(BroadcastCase c) => Binary("Add", c, (a, b) => a.Add(b));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void Sub(BroadcastCase c) => Binary("Sub", c, (a, b) => a.Sub(b));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void Mul(BroadcastCase c) => Binary("Mul", c, (a, b) => a.Mul(b));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void Div(BroadcastCase c) =>
        Binary("Div", c, (a, b) => a.Div(b), makeB: (s, r, d) => GradChecker.AwayFromZero(s, r, 0.5, d));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void Pow(BroadcastCase c) =>
        Binary("Pow", c, (a, b) => a.Pow(b), makeA: (s, r, d) => GradChecker.Uniform(s, r, 0.5, 2, d),
            makeB: (s, r, d) => GradChecker.Uniform(s, r, -2, 2, d));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void Maximum(BroadcastCase c) =>
        // a on a grid of even multiples of 0.1, b on odd ones: never within 0.08 of each other, so no ties.
        Binary("Maximum", c, (a, b) => a.Maximum(b), makeA: (s, r, d) => GradChecker.Distinct(s, r, 0.2, 0, d),
            makeB: (s, r, d) => GradChecker.Distinct(s, r, 0.2, 0.1, d));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void OperatorsCompose(BroadcastCase c) =>
        Binary("operators", c, (a, b) => (a * b - a / 2.0 + 3.0 * b) * 0.5 - (-a), makeB: (s, r, d) => GradChecker.Randn(s, r, device: d));

    private static void Unary(string op, ShapeCase c, Func<Tensor, Tensor> f, Func<Shape, Rng, Device, Tensor>? make = null,
        double tolerance = 1e-6)
    {
        var x = (make ?? ((s, r, d) => GradChecker.Randn(s, r, device: d)))(c.Shape, c.Rng(), c.Device);
        GradChecker.Check($"{op} {c}", t => f(t[0]), [x], new GradChecker.Options(Tolerance: tolerance, Seed: c.Seed));
    }

    private static Tensor Positive(Shape s, Rng r, Device d) => GradChecker.Uniform(s, r, 0.5, 2.5, d);
    private static Tensor NoKink(Shape s, Rng r, Device d) => GradChecker.AwayFromZero(s, r, 0.1, d);

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Neg(ShapeCase c) => Unary("Neg", c, x => x.Neg());

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Exp(ShapeCase c) => Unary("Exp", c, x => x.Exp());

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Log(ShapeCase c) => Unary("Log", c, x => x.Log(), Positive);

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Sqrt(ShapeCase c) => Unary("Sqrt", c, x => x.Sqrt(), Positive);

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Rsqrt(ShapeCase c) => Unary("Rsqrt", c, x => x.Rsqrt(), Positive);

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void PowScalar(ShapeCase c)
    {
        foreach (double p in new[] { 2.0, 3.0, -1.5, 0.5 })
            Unary($"PowScalar({p})", c, x => x.PowScalar(p), Positive);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void AddScalar(ShapeCase c) => Unary("AddScalar", c, x => x.AddScalar(-1.75));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void MulScalar(ShapeCase c) => Unary("MulScalar", c, x => x.MulScalar(-2.5));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void RSubScalar(ShapeCase c) => Unary("RSubScalar", c, x => x.RSubScalar(3));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Square(ShapeCase c) => Unary("Square", c, x => x.Square());

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Abs(ShapeCase c) => Unary("Abs", c, x => x.Abs(), NoKink);

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Relu(ShapeCase c) => Unary("Relu", c, x => x.Relu(), NoKink);

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Silu(ShapeCase c) => Unary("Silu", c, x => x.Silu(), (s, r, d) => GradChecker.Randn(s, r, 2, d));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Sigmoid(ShapeCase c) => Unary("Sigmoid", c, x => x.Sigmoid(), (s, r, d) => GradChecker.Randn(s, r, 2, d));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Gelu(ShapeCase c) => Unary("Gelu", c, x => x.Gelu(), (s, r, d) => GradChecker.Randn(s, r, 2, d));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Tanh(ShapeCase c) => Unary("Tanh", c, x => x.Tanh(), (s, r, d) => GradChecker.Randn(s, r, 2, d));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Clone(ShapeCase c) => Unary("Clone", c, x => (x.Rank >= 2 ? x.T : x).Clone().Mul(x.Rank >= 2 ? x.T : x));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void ContiguousOfTransposedView(ShapeCase c) =>
        Unary("Contiguous", c, x => x.Rank >= 2 ? x.T.Contiguous().Exp() : x.Contiguous().Exp());

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Few)]
    public void ToFloat32AndBackChain(ShapeCase c) =>
        // Through float32 the function is only float32-accurate: a larger step and tolerance (float32 rounding
        // of ~6e-8 relative over a 1e-3 step is ~1e-4).
        GradChecker.Check($"To(float32)->To(float64) {c}", t => t[0].To(DType.Float32).Mul(t[0].To(DType.Float32)).To(DType.Float64),
            [GradChecker.Randn(c.Shape, c.Rng(), device: c.Device)], new GradChecker.Options(Eps: 1e-3, Tolerance: 2e-3, Seed: c.Seed));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Few)]
    public void ToFloat64Identity(ShapeCase c) => Unary("To(float64) no-op", c, x => x.To(DType.Float64).Exp());

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Few)]
    public void ToOtherDeviceAndBack(ShapeCase c)
    {
        var other = c.Reference ? Device.Cpu : Device.CpuReference;
        Unary("To(device)", c, x => x.To(other).Exp().To(c.Device).Mul(x));
    }
}
