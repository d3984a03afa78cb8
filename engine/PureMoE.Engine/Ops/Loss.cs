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
        if (!targets.Device.IsHost) return CrossEntropyOnDevice(targets, ignoreIndex, expected);
        // Which rows count, and safe indices for the ignored ones (gathered, then masked out).
        long[] t = targets.ToArray<long>();
        var mask = new double[t.Length];
        int count = 0;
        for (int i = 0; i < t.Length; i++)
        {
            if (t[i] == ignoreIndex) { t[i] = 0; continue; }
            if (t[i] < 0 || t[i] >= c)
                throw new ArgumentException($"CrossEntropy: target {t[i]} at position {i} is outside [0, {c}) for logits {Shape}");
            mask[i] = 1;
            count++;
        }
        var idx = FromHost(t, [.. expected, 1], Device);
        // Uploaded as float32 (0/1 exactly) so the mask also goes to devices without float64 (ILGPU).
        var maskT = FromHost(Array.ConvertAll(mask, v => (float)v), [.. expected, 1], Device).To(DType);
        var picked = LogSoftmax(-1).Gather(-1, idx).Mul(maskT);
        return picked.Sum().MulScalar(-1.0 / Math.Max(count, 1));
    }

    // The same loss with the mask and the count formed on the device: reading the targets back would be a
    // device→host read (a synchronisation) in every forward. Targets are not range-checked here (that too would
    // be a read); an out-of-range target gathers 0, as the index kernels of ILGPU devices do.
    private Tensor CrossEntropyOnDevice(Tensor targets, long ignoreIndex, int[] expected)
    {
        var column = targets.Reshape([.. expected, 1]);
        Tensor maskT, idx, denominator;
        using (NoGrad())
        {
            // Ids travel as float32 for the comparison: exact below 2²⁴, far beyond any vocabulary.
            var ignored = column.To(DType).Eq(Scalar(ignoreIndex, DType, Device));
            maskT = ignored.Neg().AddScalar(1.0);
            idx = Where(ignored, Zeros(column.Shape, DType.Int64, Device), column);
            denominator = maskT.Sum().Maximum(Scalar(1, DType, Device));
        }
        var picked = LogSoftmax(-1).Gather(-1, idx).Mul(maskT);
        return picked.Sum().Div(denominator).Neg();
    }
}
