using System.Numerics;
using System.Runtime.CompilerServices;

namespace PureMoE.Backends.Cpu;

public partial class CpuBackend
{
    /// <summary>Largest k taken by selection passes; a larger k sorts each row (the reference's way).</summary>
    internal const int SelectionTopKMax = 16;

    /// <inheritdoc />
    /// <remarks>
    /// A router takes k ≤ 16 of a few dozen experts per token: k selection passes over the row (pass q picks the
    /// first element, in descending stable order, after the pick of pass q − 1), O(k·n) with no allocation, rows
    /// split over threads. The reference sorts each row with a comparison delegate, about 20× slower at [4096, 8],
    /// k = 2. Same order, so the same indices and values: NaN largest, ties (−0 and +0 among them) lower index first.
    /// </remarks>
    public override void TopK(Storage x, Storage values, Storage indices, int rows, int n, int k)
    {
        if (k > SelectionTopKMax)
        {
            base.TopK(x, values, indices, rows, n, k);
            return;
        }
        if (x.DType == DType.Float32) TopKBySelection(A<float>(x), A<float>(values), A<long>(indices), rows, n, k);
        else TopKBySelection(A<double>(x), A<double>(values), A<long>(indices), rows, n, k);
    }

    private static void TopKBySelection<T>(T[] x, T[] values, long[] indices, int rows, int n, int k)
        where T : IFloatingPointIeee754<T>
    {
        Par.For(rows, (long)n * k, (start, end) =>
        {
            for (int r = start; r < end; r++)
            {
                int row = r * n, prev = -1;
                T prevValue = T.Zero;
                for (int q = 0; q < k; q++)
                {
                    int best = -1;
                    T bestValue = T.Zero;
                    for (int j = 0; j < n; j++)
                    {
                        T v = x[row + j];
                        if (prev >= 0 && !ComesFirst(prevValue, prev, v, j)) continue;   // taken by an earlier pass
                        if (best < 0 || ComesFirst(v, j, bestValue, best))
                        {
                            best = j;
                            bestValue = v;
                        }
                    }
                    values[r * k + q] = bestValue;
                    indices[r * k + q] = best;
                    prev = best;
                    prevValue = bestValue;
                }
            }
        });
    }

    /// <summary>True when (a, ia) comes before (b, ib) in descending stable order with NaN largest.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool ComesFirst<T>(T a, int ia, T b, int ib) where T : IFloatingPointIeee754<T>
    {
        bool an = T.IsNaN(a), bn = T.IsNaN(b);
        if (an && bn) return ia < ib;
        if (an || bn) return an;
        if (a == b) return ia < ib;
        return a > b;
    }
}
