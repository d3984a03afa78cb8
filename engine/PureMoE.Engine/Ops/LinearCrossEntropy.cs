using PureMoE.Autograd;

namespace PureMoE;

// The output layer and the loss as one op, for large vocabularies: mean cross-entropy of hidden·Wᵀ without ever
// holding the [rows, V] logits. The rows go through in blocks; each block's logits are made, scored, turned into
// their gradient (softmax − one-hot, over the count) and multiplied into dhidden and dW at once, so the loss's
// gradients are ready when the forward ends (as in Liger-Kernel's fused linear cross-entropy) and the backward
// only scales them by the upstream gradient. Memory: two blocks of logits instead of the logits, their gradient and
// the copies between; the same GEMMs as the unfused path.
public sealed partial class Tensor
{
    /// <summary>Logit elements per block (64 MB in float32): <see cref="LinearCrossEntropy"/> takes this many rows·V at a time.</summary>
    public const int LinearCrossEntropyBlockElements = 1 << 24;

    /// <summary>
    /// Mean cross-entropy of the logits this·Wᵀ (this [..., d], <paramref name="weight"/> [V, d], as
    /// <see cref="Linear"/>) against int64 <paramref name="targets"/> [...]; targets equal to
    /// <paramref name="ignoreIndex"/> are left out of the mean. The same value and gradients as
    /// <c>Linear(weight).CrossEntropy(targets)</c> up to rounding, without holding the logits: rows go through in
    /// blocks of <paramref name="blockRows"/> (default: <see cref="LinearCrossEntropyBlockElements"/> / V), and the
    /// gradients are computed in the forward when this or the weight requires one. Host devices only.
    /// </summary>
    public Tensor LinearCrossEntropy(Tensor weight, Tensor targets, long ignoreIndex = -100, int? blockRows = null)
    {
        const string op = "LinearCrossEntropy";
        CheckSameDevice(op, this, weight);
        CheckSameDevice(op, this, targets);
        if (!Device.IsHost)
            throw new NotSupportedException($"{op}: runs on host devices; on {Device} use Linear(weight).CrossEntropy(targets)");
        if (weight.Rank != 2 || Rank < 1 || Shape[-1] != weight.Shape[1])
            throw new ArgumentException($"{op}: input {Shape} and weight {weight.Shape}: needs an input [..., d] and a weight [V, d]");
        if (weight.DType != DType || !DType.IsFloatingPoint())
            throw new ArgumentException($"{op}: input {Shape} {DType.Name()} and weight {weight.Shape} {weight.DType.Name()} need one float dtype");
        if (targets.DType != DType.Int64 || !targets.Shape.Dims.SequenceEqual(Shape.ToArray()[..^1]))
            throw new ArgumentException($"{op}: input {Shape} needs int64 targets of shape {new Shape(Shape.ToArray()[..^1])}, got {targets.DType.Name()} {targets.Shape}");
        int d = weight.Shape[1], v = weight.Shape[0], rows = Numel / Math.Max(d, 1);
        int block = Math.Clamp(blockRows ?? LinearCrossEntropyBlockElements / Math.Max(v, 1), 1, Math.Max(rows, 1));

        double scale = 1.0 / Math.Max(CountTargets(targets, ignoreIndex, v, op, $"a weight {weight.Shape}"), 1);

        bool wantX = GradMode.IsEnabled && RequiresGrad, wantW = GradMode.IsEnabled && weight.RequiresGrad;
        var x = new Tensor(Dense().Storage, new Shape(rows, d), Device);   // Dense: from offset 0
        var w = weight.Dense();
        var rowLoss = Empty(new Shape(rows), DType, Device);
        var dx = wantX ? Empty(new Shape(rows, d), DType, Device) : null;
        var dw = wantW ? (rows == 0 ? Zeros(weight.Shape, DType, Device) : Empty(weight.Shape, DType, Device)) : null;   // no rows: no product writes it
        var logits = Empty(new Shape(Math.Min(block, rows), v), DType, Device);
        var dLogits = wantX || wantW ? Empty(logits.Shape, DType, Device) : null;
        using (GradMode.NoGrad())
        {
            for (int r0 = 0; r0 < rows; r0 += block)
            {
                int n = Math.Min(block, rows - r0);
                var xBlock = x.Narrow(0, r0, n);
                var tBlock = targets.Reshape(rows).Narrow(0, r0, n).Dense();
                var zBlock = new Tensor(logits.Storage, new Shape(n, v), Device);
                RunGemm(xBlock, w.T, zBlock);                                          // z = x·Wᵀ
                var loss = Empty(new Shape(n), DType, Device);
                var counted = Empty(new Shape(n), DType, Device);
                var logSumExp = Empty(new Shape(n), DType, Device);
                Backend.CrossEntropyRows(zBlock.Storage, tBlock.Storage, ignoreIndex, loss.Storage, counted.Storage, logSumExp.Storage, n, v);
                Backend.CopyStrided(loss.AsStrided(loss.Shape), loss.Shape, rowLoss.Storage, r0);
                if (dLogits is null) continue;
                var dz = new Tensor(dLogits.Storage, new Shape(n, v), Device);
                var rowGrad = Full(new Shape(n), scale, DType, Device);               // d mean / d row loss
                Backend.CrossEntropyRowsBackward(zBlock.Storage, tBlock.Storage, ignoreIndex, logSumExp.Storage, rowGrad.Storage, dz.Storage, n, v);
                if (dx is not null) RunGemm(dz, w, dx.Narrow(0, r0, n));               // dx = dz·W
                if (dw is not null) RunGemm(dz.T, xBlock, dw, beta: r0 == 0 ? 0 : 1); // dW += dzᵀ·x
            }
        }
        Tensor mean;
        using (GradMode.NoGrad()) mean = rowLoss.Sum().MulScalar(scale);
        var shape = Shape;
        return Record(op, mean, [this, weight], g => [
            dx is null ? null : new Tensor(dx.Storage, shape, dx.Device).Mul(g).AsFreshGradient(),
            dw?.Mul(g).AsFreshGradient()]);
    }
}
