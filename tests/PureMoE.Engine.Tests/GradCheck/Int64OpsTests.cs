namespace PureMoE.Engine.Tests.GradCheck;

/// <summary>Shape ops and index ops on int64 tensors (token ids, expert ids, counts).</summary>
public class Int64OpsTests
{
    public static TheoryData<bool> Devices => new() { false, true };
    private static Device Dev(bool reference) => reference ? Device.CpuReference : Device.Cpu;

    [Theory]
    [MemberData(nameof(Devices))]
    public void ConcatOfInt64(bool reference)
    {
        var a = Tensor.FromHost(new long[] { 1, 2, 3, 4 }, [2, 2], Dev(reference));
        var b = Tensor.FromHost(new long[] { 5, 6 }, [1, 2], Dev(reference));
        var y = Tensor.Concat([a, b], 0);
        Assert.Equal(DType.Int64, y.DType);
        Assert.Equal(new long[] { 1, 2, 3, 4, 5, 6 }, y.ToLongArray());
        Assert.Equal(new long[] { 1, 2, 5, 3, 4, 6 }, Tensor.Concat([a, b.Reshape(2, 1)], 1).ToLongArray());
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void IndexAddAndScatterAddOfInt64Counts(bool reference)
    {
        // Counting tokens per expert: index_add of ones.
        var counts = Tensor.Zeros(new Shape(3), DType.Int64, Dev(reference));
        var experts = Tensor.FromHost(new long[] { 2, 0, 2, 2 }, [4], Dev(reference));
        var ones = Tensor.Full(new Shape(4), 1, DType.Int64, Dev(reference));
        Assert.Equal(new long[] { 1, 0, 3 }, counts.IndexAdd(0, experts, ones).ToLongArray());
        Assert.Equal(new long[] { 1, 0, 3 }, counts.ScatterAdd(0, experts, ones).ToLongArray());
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ViewsAndSelectionOfInt64(bool reference)
    {
        var x = Tensor.FromHost(new long[] { 1, 2, 3, 4, 5, 6 }, [2, 3], Dev(reference));
        Assert.Equal(new long[] { 1, 4, 2, 5, 3, 6 }, x.T.Contiguous().ToLongArray());
        Assert.Equal(new long[] { 2, 3, 5, 6 }, x.Narrow(1, 1, 2).Contiguous().ToLongArray());
        Assert.Equal(new long[] { 4, 5, 6, 1, 2, 3 }, x.IndexSelect(0, Tensor.FromHost(new long[] { 1, 0 }, [2], Dev(reference))).ToLongArray());
        Assert.Equal(new long[] { 3, 1, 6, 4 }, x.Gather(1, Tensor.FromHost(new long[] { 2, 0, 2, 0 }, [2, 2], Dev(reference))).ToLongArray());
        Assert.Equal(new long[] { 1, 2, 3, 1, 2, 3 }, x.Narrow(0, 0, 1).Expand(new Shape(2, 3)).Contiguous().ToLongArray());
    }
}
