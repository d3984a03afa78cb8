using PureMoE.Autograd;

namespace PureMoE.Optim;

/// <summary>Gradient clipping (torch.nn.utils.clip_grad_norm_).</summary>
public static class GradClip
{
    /// <summary>
    /// The global L2 norm of all gradients (as if concatenated into one vector), and, when it exceeds
    /// <paramref name="maxNorm"/>, every gradient scaled in place by maxNorm / (norm + 1e-6) so the norm becomes
    /// maxNorm. Parameters without a gradient are skipped. Returns the norm before clipping.
    /// </summary>
    public static double ClipGradNorm(IEnumerable<Tensor> parameters, double maxNorm)
    {
        var grads = parameters.Select(p => p.Grad).OfType<Tensor>().ToList();
        using var _ = GradMode.NoGrad();
        // Squares summed in double across tensors: the per-tensor sums come from the backend.
        double sumSquares = 0;
        foreach (var g in grads) sumSquares += g.Mul(g).Sum().Item();
        double total = Math.Sqrt(sumSquares);
        double coef = maxNorm / (total + 1e-6);
        if (coef < 1)
            foreach (var g in grads) g.CopyFrom(g.MulScalar(coef));
        return total;
    }
}
