using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PureMoE.Backends.Cpu;

public partial class CpuBackend
{
    /// <inheritdoc />
    /// <remarks>The float32 path performs the reference's float operations in the same order (same bits), 8 lanes at a time.</remarks>
    public override void AdamW(Storage param, Storage grad, Storage m, Storage v, int n,
        double lr, double beta1, double beta2, double eps, double weightDecay, double biasCorrection1, double biasCorrection2)
    {
        if (param.DType != DType.Float32 || !Simd.Enabled || n <= 0)
        {
            base.AdamW(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2);
            return;
        }
        float[] p = A<float>(param), g = A<float>(grad), ms = A<float>(m), vs = A<float>(v);
        float b1 = (float)beta1, b2 = (float)beta2, decay = (float)(1 - lr * weightDecay);
        float step = (float)(lr / biasCorrection1), sqrtBc2 = (float)Math.Sqrt(biasCorrection2), e = (float)eps;
        float c1 = 1f - b1, c2 = 1f - b2;
        Par.For(n, 8, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (s, end) =>
        {
            var vb1 = Vector256.Create(b1); var vb2 = Vector256.Create(b2); var vc1 = Vector256.Create(c1); var vc2 = Vector256.Create(c2);
            var vd = Vector256.Create(decay); var vstep = Vector256.Create(step); var vbc = Vector256.Create(sqrtBc2); var ve = Vector256.Create(e);
            int i = s;
            for (; i <= end - 8; i += 8)
            {
                var gv = Vector256.Create(g.AsSpan(i));
                var pv = Vector256.Create(p.AsSpan(i)) * vd;
                var mv = vb1 * Vector256.Create(ms.AsSpan(i)) + vc1 * gv;
                var vv = vb2 * Vector256.Create(vs.AsSpan(i)) + vc2 * gv * gv;
                pv -= vstep * mv / (Vector256.Sqrt(vv) / vbc + ve);
                pv.CopyTo(p.AsSpan(i)); mv.CopyTo(ms.AsSpan(i)); vv.CopyTo(vs.AsSpan(i));
            }
            for (; i < end; i++)
            {
                p[i] *= decay;
                ms[i] = b1 * ms[i] + c1 * g[i];
                vs[i] = b2 * vs[i] + c2 * g[i] * g[i];
                p[i] -= step * ms[i] / (MathF.Sqrt(vs[i]) / sqrtBc2 + e);
            }
        }, ElementGrain);
    }

    /// <inheritdoc />
    public override void Rope(Storage x, RopeLayout xLayout, Storage cos, Storage sin, Storage y, RopeLayout yLayout, int outer, int seq, int dim, bool inverse)
    {
        if (x.DType != DType.Float32 || !Simd.Enabled || outer <= 0 || seq <= 0 || dim < 2)
        {
            base.Rope(x, xLayout, cos, sin, y, yLayout, outer, seq, dim, inverse);
            return;
        }
        float[] xs = A<float>(x), cs = A<float>(cos), ss = A<float>(sin), ys = A<float>(y);
        int half = dim / 2;
        Par.For(outer * seq, dim * 2L, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (start, end) =>
        {
            for (int t = start; t < end; t++)
            {
                int sPos = t % seq, xr = xLayout.Row(t / seq, sPos), yr = yLayout.Row(t / seq, sPos), tab = sPos * half;
                int j = 0;
                for (; j <= half - 8; j += 8)
                {
                    var c = Vector256.Create(cs.AsSpan(tab + j));
                    var sn = Vector256.Create(ss.AsSpan(tab + j));
                    if (inverse) sn = -sn;
                    var x1 = Vector256.Create(xs.AsSpan(xr + j));
                    var x2 = Vector256.Create(xs.AsSpan(xr + half + j));
                    (x1 * c - x2 * sn).CopyTo(ys.AsSpan(yr + j));
                    (x2 * c + x1 * sn).CopyTo(ys.AsSpan(yr + half + j));
                }
                for (; j < half; j++)
                {
                    float c = cs[tab + j], sn = inverse ? -ss[tab + j] : ss[tab + j];
                    float x1 = xs[xr + j], x2 = xs[xr + half + j];
                    ys[yr + j] = x1 * c - x2 * sn;
                    ys[yr + half + j] = x2 * c + x1 * sn;
                }
            }
        });
    }
}
