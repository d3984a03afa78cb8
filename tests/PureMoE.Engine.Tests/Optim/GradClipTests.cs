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
}
