namespace PureMoE;

// Top-k and stable argsort along the last axis. Indices carry no gradient; top-k values pass theirs back to the
// positions they came from.
public sealed partial class Tensor
{
    /// <summary>
    /// The k largest entries of each row along the last axis, descending (ties: lower index first), and their
    /// int64 indices.
    /// </summary>
    public (Tensor Values, Tensor Indices) TopK(int k)
    {
        if (Rank == 0) throw new ArgumentException("TopK: needs at least one dimension");
        int n = Shape[-1];
        if (k < 0 || k > n) throw new ArgumentException($"TopK: k = {k} is outside [0, {n}] for shape {Shape}");
        int rows = n == 0 ? 0 : Numel / n;
        var shape = Shape.ToArray();
        shape[^1] = k;
        // The kernel writes every element (and there are none when it does not run).
        var values = Empty(new Shape(shape), DType, Device);
        var indices = Empty(new Shape(shape), DType.Int64, Device);
        if (rows > 0 && k > 0) Backend.TopK(Dense().Storage, values.Storage, indices.Storage, rows, n, k);
        Tensor x = this;
        values = Record("TopK", values, [x], g =>
        {
            // Each value's gradient goes back to where it came from: scattered into zeros (fresh, so no copy of them).
            var dx = ZerosLike(x);
            if (rows > 0 && k > 0) Backend.ScatterAdd(dx.Storage, indices.Storage, g.Dense().Storage, rows, n, k, 1);
            return [dx.AsFreshGradient()];
        });
        return (values, indices);
    }

    /// <summary>Stable argsort along the last axis (equal values keep their order), int64 indices.</summary>
    public Tensor ArgSort(bool descending = false)
    {
        if (Rank == 0) throw new ArgumentException("ArgSort: needs at least one dimension");
        int n = Shape[-1], rows = n == 0 ? 0 : Numel / n;
        var indices = Empty(Shape, DType.Int64, Device);   // written whole (empty when rows = 0)
        if (rows > 0) Backend.ArgSort(Dense().Storage, indices.Storage, rows, n, descending);
        return indices;
    }
}
