using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PureMoE.Backends.Cpu;

// Cross-entropy by rows in two passes over the logits forward (max, then Σ e^(x − max)) and one backward
// (e^(x − lse) − one-hot), nothing of the logits' size kept in between: with a 50K vocabulary the logits of a step are
// 200 MB, and log-softmax, gather and their backwards made six passes and two such arrays. Rows are independent, so
// the bits do not depend on how rows are split over threads.
public partial class CpuBackend
{
    /// <inheritdoc />
    public override void CrossEntropyRows(Storage x, Storage targets, long ignoreIndex, Storage loss, Storage counted, Storage logSumExp, int rows, int n)
    {
        if (x.DType != DType.Float32 || !Simd.Enabled || rows <= 0 || n <= 0)
        {
            base.CrossEntropyRows(x, targets, ignoreIndex, loss, counted, logSumExp, rows, n);
            return;
        }
        float[] xs = A<float>(x), ls = A<float>(loss), cs = A<float>(counted), lse = A<float>(logSumExp);
        long[] ts = A<long>(targets);
        Par.For(rows, n * 2L, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (s, e) =>
        {
            for (int r = s; r < e; r++)
            {
                ReadOnlySpan<float> row = xs.AsSpan(r * n, n);
                float l = LogSumExp(row);
                lse[r] = l;
                long t = ts[r];
                bool ignored = t == ignoreIndex;
                // A target outside [0, n) reads its logit as 0, as the reference and the GPU index kernels do.
                float picked = !ignored && t >= 0 && t < n ? row[(int)t] : 0f;
                ls[r] = ignored ? 0f : l - picked;
                cs[r] = ignored ? 0f : 1f;
            }
        });
    }

    /// <inheritdoc />
    public override void CrossEntropyRowsBackward(Storage x, Storage targets, long ignoreIndex, Storage logSumExp, Storage g, Storage dx, int rows, int n)
    {
        if (x.DType != DType.Float32 || !Simd.Enabled || rows <= 0 || n <= 0)
        {
            base.CrossEntropyRowsBackward(x, targets, ignoreIndex, logSumExp, g, dx, rows, n);
            return;
        }
        float[] xs = A<float>(x), lse = A<float>(logSumExp), gs = A<float>(g), dxs = A<float>(dx);
        long[] ts = A<long>(targets);
        Par.For(rows, n * 2L, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (s, e) =>
        {
            for (int r = s; r < e; r++)
            {
                Span<float> d = dxs.AsSpan(r * n, n);
                long t = ts[r];
                if (t == ignoreIndex)
                {
                    d.Clear();
                    continue;
                }
                ReadOnlySpan<float> row = xs.AsSpan(r * n, n);
                float gr = gs[r], l = lse[r];
                var vl = Vector256.Create(l);
                var vg = Vector256.Create(gr);
                int i;
                for (i = 0; i <= n - 8; i += 8) (vg * Vector256.Exp(Vector256.Create(row[i..]) - vl)).CopyTo(d[i..]);
                for (; i < n; i++) d[i] = gr * MathF.Exp(row[i] - l);
                if (t >= 0 && t < n) d[(int)t] = gr * (MathF.Exp(row[(int)t] - l) - 1f);
            }
        });
    }

    // log Σ e^x of a row: its max plus the log of Σ e^(x − max) (summed as the log-softmax sums it).
    private static float LogSumExp(ReadOnlySpan<float> x)
    {
        float max = Simd.Max(x);
        return max + MathF.Log(SumExp(x, max));
    }
}
