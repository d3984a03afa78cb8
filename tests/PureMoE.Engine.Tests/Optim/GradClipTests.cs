using PureMoE.Optim;

namespace PureMoE.Engine.Tests.Optim;

public class GradClipTests
{
    private static Tensor WithGrad(float[] grad)
    {
        var p = Tensor.Zeros(new Shape(grad.Length));
        p.RequiresGrad = true;
        p.Grad = Tensor.FromArray(grad, grad.Length);
        return p;
    }

    [Fact]
    public void ScalesAllGradientsByTheGlobalNorm()
    {
        var a = WithGrad([3, 0]);
        var b = WithGrad([0, 4, 0]);
        var noGrad = Tensor.Zeros(new Shape(2));
        double norm = GradClip.ClipGradNorm([a, b, noGrad], maxNorm: 1.0);
        Assert.Equal(5.0, norm, 6);                                     // √(3² + 4²) over both tensors
        double scale = 1.0 / (5.0 + 1e-6);
        Assert.Equal(3 * scale, a.Grad!.ToDoubleArray()[0], 6);
        Assert.Equal(4 * scale, b.Grad!.ToDoubleArray()[1], 6);
        double after = Math.Sqrt(a.Grad.ToDoubleArray().Concat(b.Grad.ToDoubleArray()).Sum(v => v * v));
        Assert.Equal(1.0, after, 5);
        Assert.Null(noGrad.Grad);
    }

    [Fact]
    public void LeavesSmallGradientsAlone()
    {
        var a = WithGrad([0.3f, -0.4f]);
        double norm = GradClip.ClipGradNorm([a], maxNorm: 1.0);
        Assert.Equal(0.5, norm, 6);
        Assert.Equal(new float[] { 0.3f, -0.4f }, a.Grad!.ToFloatArray());
    }

    [Theory]
    [InlineData(1.0)]  // norm 5 above max: scaled
    [InlineData(10.0)] // norm within max: unchanged, bit for bit
    public void OnDeviceMatchesTheHostClipOnTheCpu(double maxNorm)
    {
        // On Device.Cpu the on-device clip runs the backend interface's default multi-tensor primitives.
        float[] ga = [3, 0, 1e-3f], gb = [0, 4, 0.25f];
        var a = WithGrad(ga); var b = WithGrad(gb); var noGrad = Tensor.Zeros(new Shape(2));
        var a2 = WithGrad(ga); var b2 = WithGrad(gb);
        double expected = GradClip.ClipGradNorm([a2, b2], maxNorm);
        var norm = GradClip.ClipGradNormOnDevice([a, noGrad, b], maxNorm)!;
        Assert.Equal(expected, norm.Item(), 1e-6);
        Assert.Equal(a2.Grad!.ToFloatArray(), a.Grad!.ToFloatArray());
        Assert.Equal(b2.Grad!.ToFloatArray(), b.Grad!.ToFloatArray());
        if (maxNorm > expected) Assert.Equal(ga, a.Grad.ToFloatArray());
        Assert.Null(noGrad.Grad);
        Assert.Null(GradClip.ClipGradNormOnDevice([noGrad], maxNorm));
    }

    [Fact]
    public void ClipsInPlaceWithTheBitsOfTheOpsItReplaced()
    {
        // The clip sums squares and scales without temporaries; the result must be what g.Mul(g).Sum() and
        // g.CopyFrom(g.MulScalar(c)) gave: on the SIMD CPU (lengths around its 8- and 32-lane blocks), on the
        // reference backend, in float64, and for a gradient at an offset into its storage.
        var rng = new Rng(21);
        foreach (var device in new[] { Device.Cpu, Device.CpuReference })
            foreach (var dtype in new[] { DType.Float32, DType.Float64 })
            {
                var shapes = new[] { new Shape(1), new Shape(7), new Shape(31), new Shape(33), new Shape(1000, 3), new Shape(65, 129) };
                var grads = shapes.Select(s => Tensor.Randn(s, rng, 3.0, dtype, device)).ToList();
                grads.Add(Tensor.Randn(new Shape(9, 5), rng, 3.0, dtype, device).Narrow(0, 2, 4));   // offset 10
                var parameters = grads.Select(g =>
                {
                    var p = Tensor.Zeros(g.Shape, dtype, device);
                    p.RequiresGrad = true;
                    p.Grad = g.Clone();
                    return p;
                }).ToList();
                parameters[^1].Grad = grads[^1];   // keep the narrowed view as the gradient

                double expectedSum = grads.Sum(g => g.Mul(g).Sum().Item());
                double expectedNorm = Math.Sqrt(expectedSum), coef = 0.5 / (expectedNorm + 1e-6);
                var expected = grads.Select(g => g.MulScalar(coef).ToDoubleArray()).ToList();

                double norm = GradClip.ClipGradNorm(parameters, maxNorm: 0.5);
                Assert.Equal(expectedNorm, norm);
                for (int i = 0; i < parameters.Count; i++)
                    Assert.Equal(expected[i], parameters[i].Grad!.ToDoubleArray());
            }
    }
}
