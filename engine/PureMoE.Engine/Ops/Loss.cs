namespace PureMoE;

// Losses.
public sealed partial class Tensor
{
    /// <summary>
    /// Mean cross-entropy of logits [..., C] against int64 class targets [...]: −mean log softmax(x)[target].
    /// Targets equal to <paramref name="ignoreIndex"/> are left out of the mean (as in PyTorch).
    /// </summary>
    public Tensor CrossEntropy(Tensor targets, long ignoreIndex = -100)
    {
        if (targets.DType != DType.Int64)
            throw new ArgumentException($"CrossEntropy: targets must be int64, got {targets.DType.Name()} {targets.Shape}");
        CheckSameDevice("CrossEntropy", this, targets);
        int c = Shape[-1];
        var expected = Shape.ToArray()[..^1];
        if (!targets.Shape.Dims.SequenceEqual(expected))
            throw new ArgumentException($"CrossEntropy: logits {Shape} need targets of shape {new Shape(expected)}, got {targets.Shape}");
        if (!targets.Device.IsHost) return CrossEntropyOnDevice(targets, ignoreIndex);
        // On the host the targets are checked (on a device that would be a read) and the rows that count are counted;
        // the rows' losses then come from the same fused kernels a device runs.
        int count = CountTargets(targets, ignoreIndex, c, "CrossEntropy", $"logits {Shape}");
        var (rowLoss, _) = CrossEntropyByRows(targets, ignoreIndex);
        return rowLoss.Sum().MulScalar(1.0 / Math.Max(count, 1));
    }

    // How many host targets count (are not ignoreIndex); each must be a class in [0, classes), else an error naming
    // the op, the target, its position and what it indexes.
    private static int CountTargets(Tensor targets, long ignoreIndex, int classes, string op, string against)
    {
        long[] t = targets.ToArray<long>();
        int count = 0;
        for (int i = 0; i < t.Length; i++)
        {
            if (t[i] == ignoreIndex) continue;
            if (t[i] < 0 || t[i] >= classes)
                throw new ArgumentException($"{op}: target {t[i]} at position {i} is outside [0, {classes}) for {against}");
            count++;
        }
        return count;
    }

    // The same loss computed on the device, without reading anything back (a read would be a synchronisation in
    // every forward): one kernel gives each row's loss log Σ e^x − x[target], whether the row counts, and log Σ e^x
    // for the backward, which is one elementwise kernel (softmax − one-hot, times the row's gradient). Then the mean
    // over the rows that count. Targets are not range-checked here (that too would be a read); an out-of-range
    // target reads its logit as 0, as the index kernels of ILGPU devices do.
    private Tensor CrossEntropyOnDevice(Tensor targets, long ignoreIndex)
    {
        var (rowLoss, counted) = CrossEntropyByRows(targets, ignoreIndex);
        Tensor denominator;
        using (NoGrad()) denominator = counted.Sum().Maximum(Scalar(1, DType, Device));
        return rowLoss.Sum().Div(denominator);
    }

    // Each row's loss log Σ e^x − x[target] (0 for an ignored row) with its backward, and whether the row counts.
    private (Tensor RowLoss, Tensor Counted) CrossEntropyByRows(Tensor targets, long ignoreIndex)
    {
        int c = Shape[-1], rows = c == 0 ? 0 : Numel / c;
        var x = Dense();
        var t = targets.Dense();
        var rowLoss = Empty(new Shape(rows), DType, Device);
        var counted = Empty(new Shape(rows), DType, Device);
        var logSumExp = Empty(new Shape(rows), DType, Device);
        Backend.CrossEntropyRows(x.Storage, t.Storage, ignoreIndex, rowLoss.Storage, counted.Storage, logSumExp.Storage, rows, c);
        var shape = Shape;
        rowLoss = Record("CrossEntropy", rowLoss, [this], g =>
        {
            var dx = Empty(shape, g.DType, g.Device);
            g.Backend.CrossEntropyRowsBackward(x.Storage, t.Storage, ignoreIndex, logSumExp.Storage, g.Dense().Storage, dx.Storage, rows, c);
            return [dx.AsFreshGradient()];
        });
        return (rowLoss, counted);
    }
}
