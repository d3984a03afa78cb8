namespace PureMoE;

// RMSNorm: y = x / √(mean(x²) + eps) · w over the last axis (Llama/Mixtral). Fused forward and backward kernels.
public sealed partial class Tensor
{
    /// <summary>RMSNorm over the last axis with weight <paramref name="weight"/> [n].</summary>
    public Tensor RmsNorm(Tensor weight, double eps)
    {
        int n = Shape[-1];
        if (weight.Rank != 1 || weight.Shape[0] != n)
            throw new ArgumentException($"RmsNorm: input {Shape} needs a weight of shape [{n}], got {weight.Shape}");
        CheckSameDevice("RmsNorm", this, weight);
        if (weight.DType != DType || !DType.IsFloatingPoint())
            throw new ArgumentException($"RmsNorm: input {Shape} {DType.Name()} and weight {weight.Shape} {weight.DType.Name()} need one float dtype");
        int rows = n == 0 ? 0 : Numel / n;
        var x = Dense();
        var w = weight.Dense();
        var y = Empty(Shape, DType, Device);
        var rstd = Empty(new Shape(rows), DType, Device);
        Backend.RmsNorm(x.Storage, w.Storage, y.Storage, rstd.Storage, rows, n, eps);
        return Record("RmsNorm", y, [this, weight], g =>
        {
            var dx = Empty(x.Shape, x.DType, x.Device);
            var dw = Empty(w.Shape, w.DType, w.Device); // every backend writes dw whole (a sum over rows, not an accumulation into it)
            x.Backend.RmsNormBackward(x.Storage, w.Storage, rstd.Storage, g.Dense().Storage, dx.Storage, dw.Storage, rows, n);
            // Both are new buffers no one else holds: a leaf keeps them as its gradient without a copy.
            return [dx.AsFreshGradient(), dw.AsFreshGradient()];
        });
    }
}
