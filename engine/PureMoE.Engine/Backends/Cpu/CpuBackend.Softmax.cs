using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PureMoE.Backends.Cpu;

public partial class CpuBackend
{
    /// <inheritdoc />
    public override void Softmax(Storage x, Storage y, int rows, int n, bool log, int causalQuery)
    {
        if (x.DType != DType.Float32 || !Simd.Enabled || rows <= 0 || n <= 0)
        {
            base.Softmax(x, y, rows, n, log, causalQuery);
            return;
        }
        float[] xs = A<float>(x), ys = A<float>(y);
        Par.For(rows, n * 4L, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (s, e) =>
        {
            for (int r = s; r < e; r++)
            {
                int valid = ValidColumns(r, n, causalQuery), o = r * n;
                Span<float> yr = ys.AsSpan(o, n);
                if (valid <= 0)
                {
                    yr.Fill(log ? float.NegativeInfinity : 0f);
                    continue;
                }
                SoftmaxRow(xs.AsSpan(o, valid), yr[..valid], log);
                if (valid < n) yr[valid..].Fill(log ? float.NegativeInfinity : 0f);
            }
        });
    }

    // One row of valid columns (y may alias x).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SoftmaxRow(ReadOnlySpan<float> x, Span<float> y, bool log)
    {
        float max = Simd.Max(x);
        int n = x.Length, i;
        var vmax = Vector256.Create(max);
        if (log)
        {
            float logSum = MathF.Log(SumExp(x, max));
            var vls = Vector256.Create(logSum);
            for (i = 0; i <= n - 8; i += 8) (Vector256.Create(x[i..]) - vmax - vls).CopyTo(y[i..]);
            for (; i < n; i++) y[i] = x[i] - max - logSum;
        }
        else
        {
            for (i = 0; i <= n - 8; i += 8) Vector256.Exp(Vector256.Create(x[i..]) - vmax).CopyTo(y[i..]);
            for (; i < n; i++) y[i] = MathF.Exp(x[i] - max);
            float sum = Simd.Sum(y);
            var vs = Vector256.Create(sum);
            for (i = 0; i <= n - 8; i += 8) (Vector256.Create(y[i..]) / vs).CopyTo(y[i..]);
            for (; i < n; i++) y[i] /= sum;
        }
    }

    // Σ exp(x − max) in the fixed order of Simd.Sum (four 8-lane accumulators, then the tail).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float SumExp(ReadOnlySpan<float> x, float max)
    {
        var vmax = Vector256.Create(max);
        var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
        int n = x.Length, i;
        for (i = 0; i <= n - 32; i += 32)
        {
            a0 += Vector256.Exp(Vector256.Create(x[i..]) - vmax);
            a1 += Vector256.Exp(Vector256.Create(x[(i + 8)..]) - vmax);
            a2 += Vector256.Exp(Vector256.Create(x[(i + 16)..]) - vmax);
            a3 += Vector256.Exp(Vector256.Create(x[(i + 24)..]) - vmax);
        }
        for (; i <= n - 8; i += 8) a0 += Vector256.Exp(Vector256.Create(x[i..]) - vmax);
        float sum = Vector256.Sum((a0 + a1) + (a2 + a3));
        for (; i < n; i++) sum += MathF.Exp(x[i] - max);
        return sum;
    }

    /// <inheritdoc />
    public override void SoftmaxBackward(Storage y, Storage dy, Storage dx, int rows, int n, bool log, int causalQuery)
    {
        if (y.DType != DType.Float32 || !Simd.Enabled || rows <= 0 || n <= 0)
        {
            base.SoftmaxBackward(y, dy, dx, rows, n, log, causalQuery);
            return;
        }
        float[] ys = A<float>(y), dys = A<float>(dy), dxs = A<float>(dx);
        Par.For(rows, n * 3L, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (s, e) =>
        {
            for (int r = s; r < e; r++)
            {
                // Only the unmasked columns are read; the masked ones of dx are 0.
                int valid = Math.Max(0, ValidColumns(r, n, causalQuery));
                dxs.AsSpan(r * n + valid, n - valid).Clear();
                ReadOnlySpan<float> yr = ys.AsSpan(r * n, valid), gr = dys.AsSpan(r * n, valid);
                Span<float> xr = dxs.AsSpan(r * n, valid);
                int i, m = valid;
                if (log)
                {
                    float sum = Simd.Sum(gr);
                    var vs = Vector256.Create(sum);
                    for (i = 0; i <= m - 8; i += 8)
                        (Vector256.Create(gr[i..]) - Vector256.Exp(Vector256.Create(yr[i..])) * vs).CopyTo(xr[i..]);
                    for (; i < m; i++) xr[i] = gr[i] - MathF.Exp(yr[i]) * sum;
                }
                else
                {
                    float sum = Simd.Dot(yr, gr);
                    var vs = Vector256.Create(sum);
                    for (i = 0; i <= m - 8; i += 8)
                        (Vector256.Create(yr[i..]) * (Vector256.Create(gr[i..]) - vs)).CopyTo(xr[i..]);
                    for (; i < m; i++) xr[i] = yr[i] * (gr[i] - sum);
                }
            }
        });
    }
}
