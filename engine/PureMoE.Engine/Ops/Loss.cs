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
}
