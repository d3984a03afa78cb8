using PureMoE.Backends;

namespace PureMoE;

// Reductions along axes. The backward of a sum broadcasts the gradient back (an expand view, no copy).
public sealed partial class Tensor
{
    /// <summary>Viewed as [outer, n, inner] around <paramref name="axis"/>.</summary>
    internal (int Outer, int N, int Inner) SplitAround(int axis)
    {
        int outer = 1, inner = 1;
        for (int i = 0; i < axis; i++) outer *= Shape[i];
        for (int i = axis + 1; i < Rank; i++) inner *= Shape[i];
        return (outer, Shape[axis], inner);
    }

    private static Shape KeepDimShape(Shape s, int axis)
    {
        var d = s.ToArray();
        d[axis] = 1;
        return new Shape(d);
    }

    private static Shape DropDimShape(Shape s, int axis)
    {
        var d = s.ToArray().ToList();
        d.RemoveAt(axis);
        return new Shape([.. d]);
    }

    private Tensor ReduceKernel(ReduceOp op, int axis, string name)
    {
        if (!DType.IsFloatingPoint()) throw new ArgumentException($"{name}: needs a floating-point tensor, got {DType.Name()}");
        var c = Contiguous();
        var (outer, n, inner) = SplitAround(axis);
        var y = Empty(KeepDimShape(Shape, axis), DType, Device);
        Backend.Reduce(op, c.Storage, c.Offset, y.Storage, outer, n, inner);
        return y;
    }

    /// <summary>Sum along one axis.</summary>
    public Tensor Sum(int axis, bool keepDim = false)
    {
        int a = Shape.Axis(axis, "Sum");
        Tensor x = this;
        var y = Record("Sum", ReduceKernel(ReduceOp.Sum, a, "Sum"), [x], g => [g.Expand(x.Shape)]);
        return keepDim ? y : y.Reshape(DropDimShape(Shape, a).ToArray());
    }

    /// <summary>Sum of all elements (a 0-d tensor).</summary>
    public Tensor Sum()
    {
        Tensor flat = Reshape(Numel);
        return flat.Sum(0);
    }

    /// <summary>Mean along one axis.</summary>
    public Tensor Mean(int axis, bool keepDim = false)
    {
        int a = Shape.Axis(axis, "Mean");
        return Sum(a, keepDim).MulScalar(1.0 / Shape[a]);
    }

    /// <summary>Mean of all elements.</summary>
    public Tensor Mean() => Sum().MulScalar(1.0 / Numel);

    /// <summary>Sum over several axes.</summary>
    public Tensor Sum(int[] axes, bool keepDim = false)
    {
        var norm = axes.Select(a => Shape.Axis(a, "Sum")).Distinct().OrderByDescending(a => a).ToArray();
        Tensor y = this;
        foreach (int a in norm) y = y.Sum(a, keepDim);
        return y;
    }

    /// <summary>
    /// Maximum along one axis. The gradient is shared equally among tied maxima (like PyTorch's amax).
    /// </summary>
    public Tensor Max(int axis, bool keepDim = false)
    {
        int a = Shape.Axis(axis, "Max");
        Tensor x = this;
        var y = ReduceKernel(ReduceOp.Max, a, "Max");
        y = Record("Max", y, [x], g =>
        {
            var mask = BinaryKernel(BinaryOp.Equal, x, y, "Max");
            var count = mask.Sum(a, keepDim: true);
            return [g.Mul(mask).Div(count)];
        });
        return keepDim ? y : y.Reshape(DropDimShape(Shape, a).ToArray());
    }

    /// <summary>
    /// Sums this tensor down to <paramref name="target"/>, undoing a broadcast: leading extra dimensions and
    /// dimensions that are 1 in the target are summed.
    /// </summary>
    public Tensor SumToShape(Shape target)
    {
        if (Shape == target) return this;
        int lead = Rank - target.Rank;
        if (lead < 0) throw new ArgumentException($"SumToShape: {Shape} has fewer dimensions than {target}");
        Tensor y = this;
        for (int i = Rank - 1; i >= 0; i--)
        {
            bool summed = i < lead || (target[i - lead] == 1 && Shape[i] != 1);
            if (summed) y = y.Sum(i, keepDim: true);
        }
        return y.Reshape(target.ToArray());
    }
}
