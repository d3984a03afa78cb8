using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>Shape and layouts of the RoPE kernel (see <see cref="RopeLayout"/>).</summary>
public struct RopeArgs
{
    /// <summary>Sequence length.</summary>
    public int Seq;
    /// <summary>Head dimension (even).</summary>
    public int Dim;
    /// <summary>1 to rotate by −θ (the backward).</summary>
    public int Inverse;
    /// <summary>The input's layout: heads per batch entry, batch, head and position strides.</summary>
    public int XHeads, XBatch, XHead, XSeq;
    /// <summary>The output's layout, likewise.</summary>
    public int YHeads, YBatch, YHead, YSeq;
}

/// <summary>Scalars of one AdamW step, in float32 as the reference computes them.</summary>
public struct AdamWArgs
{
    /// <summary>1 − lr·wd.</summary>
    public float Decay;
    /// <summary>β₁, β₂.</summary>
    public float Beta1, Beta2;
    /// <summary>lr / (1 − β₁ᵗ).</summary>
    public float StepSize;
    /// <summary>√(1 − β₂ᵗ).</summary>
    public float SqrtBc2;
    /// <summary>ε.</summary>
    public float Eps;
}

internal static partial class IlgpuKernels
{
    /// <summary>Rotate-half RoPE: one thread per (outer, position, pair).</summary>
    [IlgpuKernel]
    public static void Rope(Index1D e, ArrayView<float> x, ArrayView<float> cos, ArrayView<float> sin, ArrayView<float> y, RopeArgs p)
    {
        int half = p.Dim / 2;
        int j = e % half, t = e / half, s = t % p.Seq, o = t / p.Seq;
        int xr = o / p.XHeads * p.XBatch + o % p.XHeads * p.XHead + s * p.XSeq;
        int yr = o / p.YHeads * p.YBatch + o % p.YHeads * p.YHead + s * p.YSeq;
        float c = cos[s * half + j], sn = p.Inverse != 0 ? -sin[s * half + j] : sin[s * half + j];
        float x1 = x[xr + j], x2 = x[xr + half + j];
        y[yr + j] = x1 * c - x2 * sn;
        y[yr + half + j] = x2 * c + x1 * sn;
    }

    /// <summary>AdamW (PyTorch's form, decoupled decay): one thread per parameter.</summary>
    [IlgpuKernel]
    public static void AdamW(Index1D i, ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v, AdamWArgs a) =>
        AdamWElement(param, grad, m, v, i, a);

    /// <summary>Element i of an AdamW step (shared by the single- and multi-tensor kernels, so both give the same bits).</summary>
    internal static void AdamWElement(ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v, int i, AdamWArgs a)
    {
        float g = grad[i];
        float p = param[i] * a.Decay;
        float mi = a.Beta1 * m[i] + (1f - a.Beta1) * g;
        float vi = a.Beta2 * v[i] + (1f - a.Beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] = p - a.StepSize * mi / (XMath.Sqrt(vi) / a.SqrtBc2 + a.Eps);
    }
}

public sealed partial class IlgpuBackend
{
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RopeArgs>? _rope;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamWArgs>? _adamW;

    /// <inheritdoc />
    public void Rope(Storage x, RopeLayout xLayout, Storage cos, Storage sin, Storage y, RopeLayout yLayout, int outer, int seq, int dim, bool inverse)
    {
        int total = outer * seq * (dim / 2);
        if (total == 0) return;
        var k = Cached(ref _rope, () => Auto<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RopeArgs>(IlgpuKernels.Rope));
        k(total, F(x, "Rope"), F(cos, "Rope"), F(sin, "Rope"), F(y, "Rope"), new RopeArgs
        {
            Seq = seq, Dim = dim, Inverse = inverse ? 1 : 0,
            XHeads = xLayout.Heads, XBatch = xLayout.BatchStride, XHead = xLayout.HeadStride, XSeq = xLayout.SeqStride,
            YHeads = yLayout.Heads, YBatch = yLayout.BatchStride, YHead = yLayout.HeadStride, YSeq = yLayout.SeqStride,
        });
    }

    /// <inheritdoc />
    public void AdamW(Storage param, Storage grad, Storage m, Storage v, int n,
        double lr, double beta1, double beta2, double eps, double weightDecay, double biasCorrection1, double biasCorrection2)
    {
        if (n == 0) return;
        var a = AdamWScalars(lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2);
        var k = Cached(ref _adamW, () => Auto<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamWArgs>(IlgpuKernels.AdamW));
        k(n, F(param, "AdamW").SubView(0, n), F(grad, "AdamW").SubView(0, n), F(m, "AdamW").SubView(0, n), F(v, "AdamW").SubView(0, n), a);
    }

    /// <summary>The float32 scalars of one AdamW step, rounded from double as the reference backend rounds them.</summary>
    private static AdamWArgs AdamWScalars(double lr, double beta1, double beta2, double eps, double weightDecay,
        double biasCorrection1, double biasCorrection2) => new()
    {
        Decay = (float)(1 - lr * weightDecay),
        Beta1 = (float)beta1,
        Beta2 = (float)beta2,
        StepSize = (float)(lr / biasCorrection1),
        SqrtBc2 = (float)Math.Sqrt(biasCorrection2),
        Eps = (float)eps,
    };
}
