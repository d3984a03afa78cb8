using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PureMoE.Backends.Cpu;

public partial class CpuBackend
{
    /// <inheritdoc />
    public override void RmsNorm(Storage x, Storage w, Storage y, Storage rstd, int rows, int n, double eps)
    {
        if (x.DType != DType.Float32 || !Simd.Enabled || rows <= 0 || n <= 0)
        {
            base.RmsNorm(x, w, y, rstd, rows, n, eps);
            return;
        }
        float[] xs = A<float>(x), ws = A<float>(w), ys = A<float>(y), rs = A<float>(rstd);
        float fe = (float)eps;
        Par.For(rows, n * 3L, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (s, e) =>
        {
            ReadOnlySpan<float> wr = ws.AsSpan(0, n);
            for (int r = s; r < e; r++)
            {
                ReadOnlySpan<float> xr = xs.AsSpan(r * n, n);
                Span<float> yr = ys.AsSpan(r * n, n);
                float rsv = 1f / MathF.Sqrt(Simd.Dot(xr, xr) / n + fe);
                rs[r] = rsv;
                var v = Vector256.Create(rsv);
                int i = 0;
                for (; i <= n - 8; i += 8) (Vector256.Create(xr[i..]) * v * Vector256.Create(wr[i..])).CopyTo(yr[i..]);
                for (; i < n; i++) yr[i] = xr[i] * rsv * wr[i];
            }
        });
    }

    /// <inheritdoc />
    /// <remarks>
    /// dx is split over rows. dw is split over column blocks and each column sums its rows in row order, which is
    /// the reference's order: dw is bit-for-bit the reference's and independent of threading.
    /// </remarks>
    public override void RmsNormBackward(Storage x, Storage w, Storage rstd, Storage dy, Storage dx, Storage dw, int rows, int n)
    {
        if (x.DType != DType.Float32 || !Simd.Enabled || rows <= 0 || n <= 0)
        {
            base.RmsNormBackward(x, w, rstd, dy, dx, dw, rows, n);
            return;
        }
        float[] xs = A<float>(x), ws = A<float>(w), rs = A<float>(rstd), gs = A<float>(dy), dxs = A<float>(dx), dws = A<float>(dw);
        Par.For(rows, n * 4L, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (s, e) =>
        {
            ReadOnlySpan<float> wr = ws.AsSpan(0, n);
            for (int r = s; r < e; r++)
            {
                ReadOnlySpan<float> xr = xs.AsSpan(r * n, n), gr = gs.AsSpan(r * n, n);
                Span<float> dr = dxs.AsSpan(r * n, n);
                float rsv = rs[r];
                float coef = rsv * rsv * rsv * Simd.Dot3(wr, gr, xr) / n;
                var vr = Vector256.Create(rsv); var vc = Vector256.Create(coef);
                int i = 0;
                for (; i <= n - 8; i += 8)
                    (vr * Vector256.Create(wr[i..]) * Vector256.Create(gr[i..]) - Vector256.Create(xr[i..]) * vc).CopyTo(dr[i..]);
                for (; i < n; i++) dr[i] = rsv * wr[i] * gr[i] - xr[i] * coef;
            }
        });
        Array.Clear(dws);
        Par.For(n, rows * 2L, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (s, e) =>
        {
            Span<float> acc = dws.AsSpan(s, e - s);
            int len = acc.Length;
            for (int r = 0; r < rows; r++)
            {
                ReadOnlySpan<float> xr = xs.AsSpan(r * n + s, len), gr = gs.AsSpan(r * n + s, len);
                float rsv = rs[r];
                var vr = Vector256.Create(rsv);
                int i = 0;
                for (; i <= len - 8; i += 8)
                    (Vector256.Create(acc[i..]) + Vector256.Create(gr[i..]) * Vector256.Create(xr[i..]) * vr).CopyTo(acc[i..]);
                for (; i < len; i++) acc[i] += gr[i] * xr[i] * rsv;
            }
        }, 64);
    }
}
