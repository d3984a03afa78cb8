using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PureMoE.Backends.Cpu;

public partial class CpuBackend
{
    /// <inheritdoc />
    /// <remarks>
    /// inner = 1 reduces contiguous rows with a fixed-order 32-lane sum (order depends on n only); inner &gt; 1
    /// accumulates whole rows of the [n, inner] slab in j order, which is bit-for-bit the reference order.
    /// Work is split over outer (or over inner columns), never over n.
    /// </remarks>
    public override void Reduce(ReduceOp op, Storage x, int xOffset, Storage y, int outer, int n, int inner)
    {
        if (x.DType != DType.Float32 || !Simd.Enabled || n <= 0 || outer <= 0 || inner <= 0)
        {
            base.Reduce(op, x, xOffset, y, outer, n, inner);
            return;
        }
        float[] xs = A<float>(x), ys = A<float>(y);
        bool sum = op == ReduceOp.Sum;
        if (inner == 1)
        {
            Par.For(outer, n, (s, e) =>
            {
                for (int o = s; o < e; o++)
                {
                    ReadOnlySpan<float> row = xs.AsSpan(xOffset + o * n, n);
                    ys[o] = sum ? Simd.Sum(row) : Simd.Max(row);
                }
            });
        }
        else if (outer >= Par.Workers || (long)n * inner < Par.Threshold)
        {
            Par.For(outer, (long)n * inner, (s, e) =>
            {
                for (int o = s; o < e; o++) ReduceSlab(sum, xs, xOffset + o * n * inner, ys, o * inner, n, inner, 0, inner);
            });
        }
        else
        {
            for (int o = 0; o < outer; o++)
            {
                int xo = xOffset + o * n * inner, yo = o * inner;
                Par.For(inner, n, (s, e) => ReduceSlab(sum, xs, xo, ys, yo, n, inner, s, e), 64);
            }
        }
    }

    // y[yo + i] = reduce_j x[xo + j·inner + i] for i in [i0, i1), rows accumulated in j order.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ReduceSlab(bool sum, float[] x, int xo, float[] y, int yo, int n, int inner, int i0, int i1)
    {
        Span<float> acc = y.AsSpan(yo + i0, i1 - i0);
        acc.Fill(sum ? 0f : float.NegativeInfinity);
        int len = acc.Length;
        for (int j = 0; j < n; j++)
        {
            ReadOnlySpan<float> row = x.AsSpan(xo + j * inner + i0, len);
            int i = 0;
            if (sum)
            {
                for (; i <= len - 8; i += 8) (Vector256.Create(acc[i..]) + Vector256.Create(row[i..])).CopyTo(acc[i..]);
                for (; i < len; i++) acc[i] += row[i];
            }
            else
            {
                for (; i <= len - 8; i += 8) Simd.MaxStep(Vector256.Create(acc[i..]), Vector256.Create(row[i..])).CopyTo(acc[i..]);
                for (; i < len; i++) acc[i] = Simd.MaxStep(acc[i], row[i]);
            }
        }
    }
}
