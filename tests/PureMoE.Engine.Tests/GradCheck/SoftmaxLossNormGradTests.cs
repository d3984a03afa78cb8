using FsCheck.Xunit;
using PureMoE.Testing;

namespace PureMoE.Engine.Tests.GradCheck;

public class SoftmaxLossNormGradTests
{
    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void Softmax(AxisCase c) =>
        GradChecker.Check($"Softmax {c}", t => t[0].Softmax(c.Axis), c.Seed, GradChecker.Randn(c.Shape, c.Rng(), 2, c.Device));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void LogSoftmax(AxisCase c) =>
        GradChecker.Check($"LogSoftmax {c}", t => t[0].LogSoftmax(c.Axis), c.Seed, GradChecker.Randn(c.Shape, c.Rng(), 2, c.Device));

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void CausalSoftmax(ShapeCase c)
    {
        if (c.Dims.Length < 2) return;
        int q = c.Dims[^2], k = c.Dims[^1];
        if (k < q) return;
        GradChecker.Check($"CausalSoftmax {c}", t => t[0].CausalSoftmax(q), c.Seed, GradChecker.Randn(c.Shape, c.Rng(), 2, c.Device));
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void CrossEntropyWithIgnoredRows(AxisCase c)
    {
        // logits = the shape (classes along the last axis); about a quarter of the targets are ignore_index.
        var rng = c.Rng();
        var logits = GradChecker.Randn(c.Shape, rng, 2, c.Device);
        int classes = c.Dims[^1];
        var t = new long[c.Shape.Numel / classes];
        for (int i = 0; i < t.Length; i++) t[i] = rng.NextDouble() < 0.25 ? -100 : rng.NextInt(classes);
        var targets = Tensor.FromHost(t, c.Dims[..^1], c.Device);
        GradChecker.Check($"CrossEntropy {c} targets [{string.Join(",", t)}]", x => x[0].CrossEntropy(targets), c.Seed, logits);
    }

    [Fact]
    public void CrossEntropyWithACustomIgnoreIndexAndAllIgnored()
    {
        var logits = GradChecker.Randn(new Shape(4, 3), new Rng(1));
        var targets = Tensor.FromArray(new long[] { 2, 7, 0, 7 }, 4);
        GradChecker.Check("CrossEntropy ignore 7", x => x[0].CrossEntropy(targets, ignoreIndex: 7), 1, logits);
        var none = Tensor.FromArray(new long[] { -100, -100, -100, -100 }, 4);
        var loss = logits.CrossEntropy(none);
        Assert.Equal(0.0, loss.Item());
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void RmsNormInputAndWeight(ShapeCase c)
    {
        if (c.Dims.Length == 0) return;
        var rng = c.Rng();
        var x = GradChecker.Randn(c.Shape, rng, device: c.Device);
        var w = GradChecker.Randn(new Shape(c.Dims[^1]), rng, device: c.Device);
        GradChecker.Check($"RmsNorm {c}", t => t[0].RmsNorm(t[1], 1e-5), c.Seed, x, w);
    }

    [Fact]
    public void RmsNormOfAView()
    {
        var x = GradChecker.Randn(new Shape(4, 3), new Rng(1));
        var w = GradChecker.Randn(new Shape(4), new Rng(2));
        GradChecker.Check("RmsNorm of x.T", t => t[0].T.RmsNorm(t[1], 1e-6).Mul(t[0].T), 3, x, w);
    }
}
