using PureMoE.Autograd;
using PureMoE.Backends;
using PureMoE.Backends.Cpu;

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
        foreach (var g in grads) sumSquares += SquaredSum(g);
        double total = Math.Sqrt(sumSquares);
        double coef = maxNorm / (total + 1e-6);
        if (coef < 1)
            foreach (var g in grads) ScaleInPlace(g, coef);
        return total;
    }

    // Σ g², the bits of g.Mul(g).Sum() without a temporary of g's size (two of them per gradient per step were the
    // largest arrays a CPU training step made: 850 MB for a 106M-parameter model). On the SIMD CPU backend a float32
    // sum is Simd.Sum, and Simd.Dot(g, g) adds the same rounded products in the same order.
    private static double SquaredSum(Tensor g)
    {
        if (g.Backend is CpuBackend && Simd.Enabled && g.IsContiguous && g.Storage is CpuStorage { Data: float[] data })
        {
            var span = data.AsSpan(g.Offset, g.Numel);
            return Simd.Dot(span, span);
        }
        return g.Mul(g).Sum().Item();
    }

    // g ← g·c in place, by the kernel MulScalar runs (the same bits); g must lie contiguously in its storage.
    private static void ScaleInPlace(Tensor g, double c)
    {
        if (!g.IsContiguous)
            throw new InvalidOperationException($"ClipGradNorm: a gradient {g.Shape} is a non-contiguous view; it must lie contiguously in its storage to be scaled in place");
        g.Backend.Unary(UnaryOp.MulScalar, g.Storage, g.Offset, g.Storage, g.Offset, g.Numel, c);
    }

    /// <summary>
    /// <see cref="ClipGradNorm"/> without reading anything back to the host, for ILGPU devices where every read
    /// waits for the queued work: the global norm and the coefficient min(1, maxNorm / (norm + 1e-6)) stay on the
    /// gradients' device and every gradient is multiplied by it (by exactly 1 when the norm is within
    /// <paramref name="maxNorm"/>, so nothing changes then). The squares are summed in the gradients' precision
    /// (float32 on a GPU), not in double as <see cref="ClipGradNorm"/> does. Returns the norm before clipping as a
    /// one-element tensor on that device (reading it is one device→host read), or null when no parameter has a
    /// gradient. All gradients must be on one device, of one dtype, and own contiguous storage (as gradients do).
    /// </summary>
    public static Tensor? ClipGradNormOnDevice(IEnumerable<Tensor> parameters, double maxNorm)
    {
        var grads = parameters.Select(p => p.Grad).OfType<Tensor>().ToList();
        if (grads.Count == 0) return null;
        using var _ = GradMode.NoGrad();
        var device = grads[0].Device;
        foreach (var g in grads)
        {
            Tensor.CheckSameDevice("ClipGradNormOnDevice", grads[0], g);
            if (!g.IsContiguous || g.Offset != 0 || g.DType != grads[0].DType)
                throw new InvalidOperationException($"ClipGradNormOnDevice: gradient {g} must own contiguous storage of one dtype ({grads[0].DType.Name()}) to be scaled in place");
        }
        var slices = grads.Select(g => new BufferSlice(g.Storage, g.Numel)).ToArray();
        // The sum of squares of all gradients at once (a GPU sums up to 16 gradients per launch), then the norm.
        var sumSquares = Tensor.Empty(new Shape(), grads[0].DType, device);
        device.Backend.SumOfSquares(slices, sumSquares.Storage);
        // The norm and min(1, maxNorm / (norm + 1e-6)) in one launch on a GPU; a coefficient of exactly 1 leaves
        // the gradients bit for bit as they were.
        var norm = Tensor.Empty(new Shape(), grads[0].DType, device);
        var coef = Tensor.Empty(new Shape(), grads[0].DType, device);
        device.Backend.ClipCoefficient(sumSquares.Storage, maxNorm, norm.Storage, coef.Storage);
        // Scaled in place, several gradients per launch on a GPU, by the same product as a Mul (the same bits).
        device.Backend.ScaleInPlace(slices, coef.Storage);
        return norm;
    }
}
