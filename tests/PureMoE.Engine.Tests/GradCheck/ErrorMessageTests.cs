namespace PureMoE.Engine.Tests.GradCheck;

/// <summary>Shape, broadcast, dtype and device errors name the op and the shapes.</summary>
public class ErrorMessageTests
{
    private static Tensor Z(params int[] shape) => Tensor.Zeros(new Shape(shape), DType.Float64);
    private static Tensor Ids(params long[] v) => Tensor.FromArray(v, v.Length);

    private static void Throws<TEx>(Action act, params string[] parts) where TEx : Exception
    {
        var ex = Assert.ThrowsAny<TEx>(act);
        foreach (var p in parts) Assert.Contains(p, ex.Message);
    }

    [Fact]
    public void MatMulErrors()
    {
        var ex = Assert.Throws<ArgumentException>(() => Z(4, 8).MatMul(Z(7, 3)));
        Assert.Equal("MatMul: [4,8] x [7,3]: inner dimensions 8 and 7 differ", ex.Message);
        Throws<ArgumentException>(() => Z(4).MatMul(Z(4, 2)), "MatMul", "[4]", "[4,2]", "at least 2 dimensions");
        Throws<ArgumentException>(() => Z(2, 3, 4).MatMul(Z(5, 4, 2)), "MatMul", "[2,3,4]", "[5,4,2]", "broadcast");
        Throws<ArgumentException>(() => Z(2, 3).MatMul(Tensor.Zeros(new Shape(3, 2))), "MatMul", "float64", "float32");
    }

    [Fact]
    public void BroadcastErrorsNameOpAndShapes()
    {
        Throws<ArgumentException>(() => Z(2, 3).Add(Z(4)), "Add", "[2,3]", "[4]", "cannot be broadcast");
        Throws<ArgumentException>(() => Z(2, 3).Sub(Z(3, 3)), "Sub", "[2,3]", "[3,3]");
        Throws<ArgumentException>(() => Z(2, 3).Mul(Z(2, 1, 2)), "Mul", "[2,3]", "[2,1,2]");
        Throws<ArgumentException>(() => Z(5).Div(Z(4)), "Div", "[5]", "[4]");
        Throws<ArgumentException>(() => Z(5).Pow(Z(4)), "Pow", "[5]", "[4]");
        Throws<ArgumentException>(() => Z(5).Maximum(Z(4)), "Maximum", "[5]", "[4]");
        Throws<ArgumentException>(() => Tensor.Where(Z(3), Z(2, 3), Z(4)), "Where", "[4]");
        Throws<ArgumentException>(() => Z(3).Expand(new Shape(4)), "Expand", "[3]", "[4]");
        Throws<ArgumentException>(() => Z(2, 3).Expand(new Shape(3)), "Expand", "[2,3]", "[3]");
        Throws<ArgumentException>(() => Z(2).Add(Tensor.Zeros(new Shape(2))), "Add", "float64", "float32");
    }

    [Fact]
    public void ViewErrors()
    {
        Throws<ArgumentException>(() => Z(2, 3).Reshape(4, 2), "Reshape", "[2,3]", "[4,2]");
        Throws<ArgumentException>(() => Z(2, 3).Reshape(4, -1), "Reshape", "[2,3]", "-1");
        Throws<ArgumentException>(() => Z(2, 3).Permute(0, 0), "Permute", "[2,3]");
        Throws<ArgumentException>(() => Z(2, 3).Permute(0), "Permute", "[2,3]");
        Throws<ArgumentException>(() => Z(2, 3).Transpose(0, 2), "Transpose", "[2,3]");
        Throws<ArgumentException>(() => Z(2, 3).Narrow(1, 2, 2), "Narrow", "[2,3]");
        Throws<ArgumentException>(() => Z(2, 3).Squeeze(0), "Squeeze", "[2,3]");
        Throws<ArgumentException>(() => Z(2, 3).Unsqueeze(4), "Unsqueeze", "[2,3]");
        Throws<ArgumentException>(() => Z(2, 3).Split([1, 1], 1), "Split", "[2,3]");
        Throws<ArgumentException>(() => Tensor.Concat([Z(2, 3), Z(3, 3)], 1), "Concat", "[2,3]", "[3,3]");
        Throws<ArgumentException>(() => Tensor.Concat([Z(2, 3), Z(2)], 0), "Concat", "[2,3]", "[2]");
        Throws<ArgumentException>(() => Tensor.FromArray(new double[5], 2, 3), "FromArray", "[2,3]");
    }

    [Fact]
    public void ReductionAndSoftmaxAxisErrors()
    {
        Throws<ArgumentException>(() => Z(2, 3).Sum(2), "Sum", "axis 2", "[2,3]");
        Throws<ArgumentException>(() => Z(2, 3).Mean(-3), "Mean", "[2,3]");
        Throws<ArgumentException>(() => Z(2, 3).Max(5), "Max", "[2,3]");
        Throws<ArgumentException>(() => Z(2, 3).Softmax(2), "Softmax", "[2,3]");
        Throws<ArgumentException>(() => Z(2, 3).LogSoftmax(-3), "LogSoftmax", "[2,3]");
        Throws<ArgumentException>(() => Z(2, 3).LogSumExp(3), "LogSumExp", "[2,3]");
        Throws<ArgumentException>(() => Z(2, 3).SumToShape(new Shape(4, 2, 3)), "SumToShape", "[2,3]", "[4,2,3]");
        Throws<ArgumentException>(() => Z().Sum(0), "Sum", "[]");
    }

    [Fact]
    public void IndexingErrors()
    {
        Throws<ArgumentException>(() => Z(3, 2).IndexSelect(0, Tensor.Zeros(new Shape(2))), "IndexSelect", "int64");
        Throws<IndexOutOfRangeException>(() => Z(3, 2).IndexSelect(0, Ids(1, 3)), "IndexSelect", "index 3", "length 3");
        Throws<IndexOutOfRangeException>(() => Z(3, 2).IndexSelect(0, Ids(-1)), "IndexSelect", "index -1");
        Throws<ArgumentException>(() => Z(3, 2, 2).Embedding(Ids(0)), "Embedding", "[3,2,2]");
        Throws<IndexOutOfRangeException>(() => Z(3, 2).Embedding(Ids(5)), "index 5");
        Throws<ArgumentException>(() => Z(3, 2).Gather(1, Tensor.FromArray(new long[3], 3, 1, 1)), "Gather", "[3,1,1]", "[3,2]");
        Throws<IndexOutOfRangeException>(() => Z(3, 2).Gather(1, Tensor.FromArray(new long[] { 0, 2, 1 }, 3, 1)), "Gather", "index 2");
        Throws<ArgumentException>(() => Z(3, 2).ScatterAdd(1, Tensor.FromArray(new long[3], 3, 1), Z(3, 2)), "ScatterAdd", "[3,1]", "[3,2]");
        Throws<ArgumentException>(() => Z(3, 2).ScatterAdd(1, Tensor.FromArray(new long[4], 4, 1), Z(4, 1)), "ScatterAdd", "[4,1]", "[3,2]");
        Throws<ArgumentException>(() => Z(3, 2).ScatterAdd(1, Tensor.FromArray(new long[3], 3, 1), Tensor.Zeros(new Shape(3, 1))),
            "ScatterAdd", "float32", "float64");
        Throws<ArgumentException>(() => Z(3, 2).IndexAdd(0, Ids(0, 1), Z(3, 2)), "IndexAdd", "[3,2]");
        Throws<ArgumentException>(() => Z(3, 2).IndexAdd(0, Ids(0, 1), Z(2, 3)), "IndexAdd", "[2,3]", "[3,2]");
        Throws<ArgumentException>(() => Z(3, 2).IndexAdd(0, Ids(0), Tensor.Zeros(new Shape(1, 2))), "IndexAdd", "float32", "float64");
        Throws<IndexOutOfRangeException>(() => Z(3, 2).IndexAdd(0, Ids(4), Z(1, 2)), "IndexAdd", "index 4");
        Throws<ArgumentException>(() => Z(3, 4).TopK(5), "TopK", "k = 5", "[3,4]");
        Throws<ArgumentException>(() => Z().TopK(1), "TopK");
        Throws<ArgumentException>(() => Z().ArgSort(), "ArgSort");
    }

    [Fact]
    public void LossNormRopeAttentionErrors()
    {
        Throws<ArgumentException>(() => Z(4, 3).CrossEntropy(Ids(0, 1, 2)), "CrossEntropy", "[4,3]", "[4]", "[3]");
        Throws<ArgumentException>(() => Z(2, 3).CrossEntropy(Ids(0, 3)), "CrossEntropy", "target 3", "[2,3]");
        Throws<ArgumentException>(() => Z(2, 3).CrossEntropy(Tensor.Zeros(new Shape(2))), "CrossEntropy", "int64");
        Throws<ArgumentException>(() => Z(2, 3).RmsNorm(Z(2), 1e-5), "RmsNorm", "[2,3]", "[2]");
        Throws<ArgumentException>(() => Z(2, 3).RmsNorm(Tensor.Zeros(new Shape(3)), 1e-5), "RmsNorm", "float64", "float32");
        var (cos, sin) = Tensor.RopeTables(4, 6, 10000, dtype: DType.Float64);
        Throws<ArgumentException>(() => Z(2, 3, 6).Rope(cos, sin), "Rope", "[2,3,6]", "[3,3]", "[4,3]");
        Throws<ArgumentException>(() => Z(4, 5).Rope(cos, sin), "Rope", "[4,5]", "even");
        Throws<ArgumentException>(() => Z(6).Rope(cos, sin), "Rope", "[6]");
        var (cos32, sin32) = Tensor.RopeTables(4, 6, 10000);
        Throws<ArgumentException>(() => Z(4, 6).Rope(cos32, sin32), "Rope", "float64", "float32");
        Throws<ArgumentException>(() => Tensor.CausalAttention(Z(1, 4, 3, 2), Z(1, 3, 3, 2), Z(1, 3, 3, 2)), "CausalAttention", "[1,4,3,2]", "[1,3,3,2]");
        Throws<ArgumentException>(() => Tensor.CausalAttention(Z(1, 4, 3, 2), Z(1, 2, 2, 2), Z(1, 2, 2, 2)), "CausalAttention", "Sk");
        Throws<ArgumentException>(() => Tensor.CausalAttention(Z(1, 4, 3, 2), Z(1, 2, 3, 2), Z(1, 2, 3, 3)), "CausalAttention", "[1,2,3,3]");
        Throws<ArgumentException>(() => Tensor.CausalAttention(Z(4, 3, 2), Z(1, 2, 3, 2), Z(1, 2, 3, 2)), "CausalAttention", "[4,3,2]");
        // A score matrix past 2^31 − 1 elements, where the products would compute it whole: named before any allocation.
        Throws<ArgumentException>(() => Tensor.CausalAttention(Z(1, 2, 40000, 1), Z(1, 1, 40000, 1), Z(1, 1, 40000, 1)),
            "CausalAttention", "[1,80000,40000]", "score matrix", "tile by tile");
    }

    // ---------------------------------------------------------------- devices

    private static Tensor OnRef(Tensor t) => t.To(Device.CpuReference);

    public static TheoryData<string> MixedDeviceOps => new()
    {
        "Add", "Mul", "Div", "Maximum", "MatMul", "Concat", "Where", "RmsNorm", "IndexSelect", "Gather", "ScatterAdd",
        "IndexAdd", "Rope", "CausalAttention", "CrossEntropy", "Embedding",
    };

    [Theory]
    [MemberData(nameof(MixedDeviceOps))]
    public void MixingCpuAndCpuReferenceIsAClearError(string op)
    {
        Action act = op switch
        {
            "Add" => () => Z(2, 3).Add(OnRef(Z(2, 3))),
            "Mul" => () => OnRef(Z(3)).Mul(Z(3)),
            "Div" => () => Z(3).Div(OnRef(Z(3))),
            "Maximum" => () => Z(3).Maximum(OnRef(Z(3))),
            "MatMul" => () => Z(2, 3).MatMul(OnRef(Z(3, 2))),
            "Concat" => () => Tensor.Concat([Z(2), OnRef(Z(2))], 0),
            "Where" => () => Tensor.Where(OnRef(Z(2)), Z(2), Z(2)),
            "RmsNorm" => () => Z(2, 3).RmsNorm(OnRef(Z(3)), 1e-5),
            "IndexSelect" => () => Z(3, 2).IndexSelect(0, OnRef(Ids(1))),
            "Gather" => () => Z(3, 2).Gather(1, OnRef(Tensor.FromArray(new long[3], 3, 1))),
            "ScatterAdd" => () => Z(3, 2).ScatterAdd(1, Tensor.FromArray(new long[3], 3, 1), OnRef(Z(3, 1))),
            "IndexAdd" => () => Z(3, 2).IndexAdd(0, Ids(1), OnRef(Z(1, 2))),
            "Rope" => () => Z(4, 6).Rope(OnRef(Z(4, 3)), OnRef(Z(4, 3))),
            "CausalAttention" => () => Tensor.CausalAttention(Z(1, 2, 3, 2), OnRef(Z(1, 1, 3, 2)), Z(1, 1, 3, 2)),
            "CrossEntropy" => () => Z(2, 3).CrossEntropy(OnRef(Ids(0, 1))),
            "Embedding" => () => Z(3, 2).Embedding(OnRef(Ids(1, 2))),
            _ => throw new ArgumentOutOfRangeException(nameof(op)),
        };
        var ex = Assert.ThrowsAny<InvalidOperationException>(act);
        Assert.Contains("different devices", ex.Message);
        Assert.Contains("cpu-reference", ex.Message);
        Assert.Contains("To(device)", ex.Message);
    }

    [Fact]
    public void BackwardWithAGradientOnAnotherDeviceIsAClearError()
    {
        var x = Z(2);
        x.RequiresGrad = true;
        var ex = Assert.ThrowsAny<Exception>(() => x.Exp().Backward(OnRef(Tensor.Ones(new Shape(2), DType.Float64))));
        Assert.Contains("different devices", ex.Message);
    }
}
