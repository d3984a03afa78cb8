namespace PureMoE;

// Softmax family along an axis (the kernels work on the last axis; other axes are moved there and back).
public sealed partial class Tensor
{
    private Tensor SoftmaxCore(int axis, bool log, int causalQuery, string name)
    {
        int a = Shape.Axis(axis, name);
        if (a != Rank - 1)
        {
            // Move the axis last, apply, move it back (permute is its own inverse for a swap).
            return Transpose(a, -1).SoftmaxCore(-1, log, causalQuery, name).Transpose(a, -1);
        }
        if (!DType.IsFloatingPoint()) throw new ArgumentException($"{name}: needs a floating-point tensor, got {DType.Name()}");
        int n = Shape[-1], rows = n == 0 ? 0 : Numel / n;
        var x = Dense();
        var y = Empty(Shape, DType, Device);
        Backend.Softmax(x.Storage, y.Storage, rows, n, log, causalQuery);
        return Record(name, y, [this], g =>
        {
            var dx = Empty(y.Shape, y.DType, y.Device);
            y.Backend.SoftmaxBackward(y.Storage, g.Dense().Storage, dx.Storage, rows, n, log, causalQuery);
            return [dx];
        });
    }

    /// <summary>softmax along <paramref name="axis"/> (default last).</summary>
    public Tensor Softmax(int axis = -1) => SoftmaxCore(axis, log: false, 0, "Softmax");

    /// <summary>log-softmax along <paramref name="axis"/> (default last), computed stably.</summary>
    public Tensor LogSoftmax(int axis = -1) => SoftmaxCore(axis, log: true, 0, "LogSoftmax");

    /// <summary>
    /// Causal softmax over the last axis of attention scores [..., q, k]: query i (the row index mod q) sees keys
    /// j ≤ i + k − q; masked entries are exactly 0.
    /// </summary>
    internal Tensor CausalSoftmax(int queryLength) => SoftmaxCore(-1, log: false, queryLength, "CausalSoftmax");

    /// <summary>log Σ exp along an axis, computed stably (gradient: the softmax).</summary>
    public Tensor LogSumExp(int axis = -1, bool keepDim = false)
    {
        int a = Shape.Axis(axis, "LogSumExp");
        Tensor m;
        using (NoGrad()) m = Detach().Max(a, keepDim: true);
        var y = Sub(m).Exp().Sum(a, keepDim: true).Log().Add(m);
        return keepDim ? y : y.Squeeze(a);
    }
}
