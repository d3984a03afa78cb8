using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using PureMoE.Testing;

namespace PureMoE.Engine.Tests.GradCheck;

/// <summary>A shape, a subset of its axes, keepDim.</summary>
public sealed record AxesCase(int[] Dims, int[] Axes, bool KeepDim, ulong Seed, bool Reference)
{
    public Shape Shape => new(Dims);
    public Device Device => Reference ? Device.CpuReference : Device.Cpu;
    public override string ToString() => $"{Shape} axes=[{string.Join(",", Axes)}] keepDim={KeepDim} seed={Seed} {Device}";
}

public static class ReduceArbitraries
{
    public static Arbitrary<AxesCase> AxesCase() =>
        (from d in ShapeGen.Dims(1, 4)
         from pick in Gen.ArrayOf(Gen.Elements(false, true), d.Length)
         from neg in Gen.Elements(false, true)
         from keep in Gen.Elements(false, true)
         from s in ShapeGen.Seed
         from r in ShapeGen.Reference
         select new AxesCase(d, Enumerable.Range(0, d.Length).Where(i => pick[i]).Select(i => neg ? i - d.Length : i).ToArray(), keep, s, r))
        .ToArbitrary();
}

public class ReduceGradTests
{
    private static void Check(string op, AxisCase c, Func<Tensor, Tensor> f, Tensor? x = null) =>
        GradChecker.Check($"{op} {c}", t => f(t[0]), c.Seed, x ?? GradChecker.Randn(c.Shape, c.Rng(), device: c.Device));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void SumAlongAxis(AxisCase c) => Check("Sum", c, x => x.Sum(c.Axis, c.KeepDim));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void MeanAlongAxis(AxisCase c) => Check("Mean", c, x => x.Mean(c.Axis, c.KeepDim));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void MaxAlongAxisWithoutTies(AxisCase c) =>
        Check("Max", c, x => x.Max(c.Axis, c.KeepDim), GradChecker.Distinct(c.Shape, c.Rng(), device: c.Device));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void SumAll(ShapeCase c) =>
        GradChecker.Check($"Sum() {c}", t => t[0].Sum(), c.Seed, GradChecker.Randn(c.Shape, c.Rng(), device: c.Device));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void MeanAll(ShapeCase c) =>
        GradChecker.Check($"Mean() {c}", t => t[0].Mean(), c.Seed, GradChecker.Randn(c.Shape, c.Rng(), device: c.Device));

    [Property(Arbitrary = [typeof(ReduceArbitraries)], MaxTest = Runs.Many)]
    public void SumOverSeveralAxes(AxesCase c) =>
        GradChecker.Check($"Sum(axes) {c}", t => t[0].Sum(c.Axes, c.KeepDim), c.Seed,
            GradChecker.Randn(c.Shape, new Rng(c.Seed), device: c.Device));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void SumToShape(BroadcastCase c)
    {
        // Sum the broadcast result down to A's shape.
        var x = GradChecker.Randn(c.Result, c.Rng(), device: c.Device);
        GradChecker.Check($"SumToShape {c.Result}->{c.ShapeA} {c}", t => t[0].SumToShape(c.ShapeA), c.Seed, x);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void LogSumExp(AxisCase c) =>
        Check("LogSumExp", c, x => x.LogSumExp(c.Axis, c.KeepDim), GradChecker.Randn(c.Shape, c.Rng(), 3, c.Device));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void SumOfTransposedView(AxisCase c) =>
        Check("Sum of permuted view", c, x =>
        {
            var p = Enumerable.Range(0, x.Rank).Reverse().ToArray();
            return x.Permute(p).Sum(c.Axis, c.KeepDim);
        });
}
