namespace PureMoE.Engine.Tests;

public class SmokeTests
{
    [Fact]
    public void MatMulBackwardMatchesHandComputation()
    {
        var a = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3);
        var b = Tensor.FromArray(new float[] { 1, 0, 0, 1, 1, 1 }, 3, 2);
        a.RequiresGrad = true;
        b.RequiresGrad = true;
        var y = a.MatMul(b);
        Assert.Equal(new float[] { 4, 5, 10, 11 }, y.ToArray<float>());
        y.Sum().Backward();
        // d(sum AB)/dA = 1·Bᵀ row sums; d/dB = Aᵀ·1.
        Assert.Equal(new float[] { 1, 1, 2, 1, 1, 2 }, a.Grad!.ToArray<float>());
        Assert.Equal(new float[] { 5, 5, 7, 7, 9, 9 }, b.Grad!.ToArray<float>());
    }

    [Fact]
    public void MatMulErrorNamesShapes()
    {
        var ex = Assert.Throws<ArgumentException>(() => Tensor.Zeros(new Shape(4, 8)).MatMul(Tensor.Zeros(new Shape(7, 3))));
        Assert.Equal("MatMul: [4,8] x [7,3]: inner dimensions 8 and 7 differ", ex.Message);
    }
}
