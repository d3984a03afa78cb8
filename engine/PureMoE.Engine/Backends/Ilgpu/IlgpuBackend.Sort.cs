using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>Shape of the per-row sort kernels.</summary>
public struct SortArgs
{
    /// <summary>Rows.</summary>
    public int Rows;
    /// <summary>Row length.</summary>
    public int N;
    /// <summary>Top-k count.</summary>
    public int K;
    /// <summary>1 for descending order.</summary>
    public int Descending;
}

// Orders as the reference backend: NaN is the largest value; ties keep the lower index first (stable).
internal static partial class IlgpuKernels
{
    // Written as plain boolean tests, not as a three-way comparison c = a < b ? −1 : a > b ? 1 : 0: for that
    // expression C# emits a branch with a comparison on one arm and the constant −1 on the other, which ILGPU 1.5.3's
    // IL reader takes for a short-circuit ||, so −1 became true (1) and every element "came before" every other on
    // CUDA (an H200; ILGPU's CPU accelerator runs the IL and was right). IlgpuCompilerQuirkTests holds both forms.
    /// <summary>True when (a, ia) comes before (b, ib) in ascending (or descending) stable order, NaN largest.</summary>
    public static bool Before(float a, int ia, float b, int ib, bool descending)
    {
        bool an = XMath.IsNaN(a), bn = XMath.IsNaN(b);
        if (an && bn) return ia < ib;             // NaNs tie
        if (an) return descending;                // a NaN is the largest value
        if (bn) return !descending;
        if (a == b) return ia < ib;               // ties (−0 and +0 among them) keep the lower index first
        return descending ? a > b : a < b;
    }

    /// <summary>Stable order on int64 keys.</summary>
    public static bool Before(long a, int ia, long b, int ib, bool descending)
    {
        if (a == b) return ia < ib;
        return descending ? a > b : a < b;
    }

    /// <summary>
    /// Top-k of one row per thread by k selection passes over the row (k is small: experts per token): pass p picks
    /// the first element, in descending stable order, that comes after the pick of pass p−1. O(k·n), no memory.
    /// </summary>
    [IlgpuKernel]
    public static void TopK(Index1D r, ArrayView<float> x, ArrayView<float> values, ArrayView<long> indices, SortArgs p)
    {
        int o = r * p.N;
        int prev = -1;
        float prevValue = 0f;
        for (int q = 0; q < p.K; q++)
        {
            int best = -1;
            float bestValue = 0f;
            for (int j = 0; j < p.N; j++)
            {
                float v = x[o + j];
                if (prev >= 0 && !Before(prevValue, prev, v, j, true)) continue;
                if (best < 0 || Before(v, j, bestValue, best, true))
                {
                    best = j;
                    bestValue = v;
                }
            }
            values[r * p.K + q] = bestValue;
            indices[r * p.K + q] = best;
            prev = best;
            prevValue = bestValue;
        }
    }

    /// <summary>
    /// Stable argsort by rank counting: thread (row, j) counts the elements that come before element j and writes
    /// j at that rank. O(n) per thread, O(n²) per row: for short rows (routing); long rows take the radix sort of
    /// IlgpuBackend.ArgSort.cs.
    /// </summary>
    [IlgpuKernel]
    public static void ArgSortFloat(Index1D e, ArrayView<float> x, ArrayView<long> indices, SortArgs p)
    {
        int r = e / p.N, j = e % p.N, o = r * p.N;
        float v = x[o + j];
        bool desc = p.Descending != 0;
        int rank = 0;
        for (int m = 0; m < p.N; m++)
            if (Before(x[o + m], m, v, j, desc)) rank++;
        indices[o + rank] = j;
    }

    /// <summary>Stable argsort of int64 keys by rank counting.</summary>
    [IlgpuKernel]
    public static void ArgSortLong(Index1D e, ArrayView<long> x, ArrayView<long> indices, SortArgs p)
    {
        int r = e / p.N, j = e % p.N, o = r * p.N;
        long v = x[o + j];
        bool desc = p.Descending != 0;
        int rank = 0;
        for (int m = 0; m < p.N; m++)
            if (Before(x[o + m], m, v, j, desc)) rank++;
        indices[o + rank] = j;
    }
}

public sealed partial class IlgpuBackend
{
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<long>, SortArgs>? _topK;
    private Action<Index1D, ArrayView<float>, ArrayView<long>, SortArgs>? _argSortF;
    private Action<Index1D, ArrayView<long>, ArrayView<long>, SortArgs>? _argSortL;

    /// <inheritdoc />
    public void TopK(Storage x, Storage values, Storage indices, int rows, int n, int k)
    {
        if (rows == 0 || k == 0) return;
        var kernel = Cached(ref _topK, () => Auto<ArrayView<float>, ArrayView<float>, ArrayView<long>, SortArgs>(IlgpuKernels.TopK));
        kernel(rows, F(x, "TopK"), F(values, "TopK"), L(indices, "TopK"), new SortArgs { Rows = rows, N = n, K = k });
    }

    /// <inheritdoc />
    /// <remarks>
    /// Short rows or small jobs (<see cref="UsesRankArgSort"/>): rank counting, one launch, O(n²) per row. Otherwise
    /// a radix sort of all rows at once, O(rows·n) per pass. Both give the reference backend's indices exactly.
    /// </remarks>
    public void ArgSort(Storage x, Storage indices, int rows, int n, bool descending)
    {
        int total = rows * n;
        if (total == 0) return;
        var p = new SortArgs { Rows = rows, N = n, Descending = descending ? 1 : 0 };
        var xs = S(x, "ArgSort");
        var output = L(indices, "ArgSort");
        if (!UsesRankArgSort(rows, n))
            ArgSortRadix(xs, output, p);
        else if (xs.DType == DType.Float32)
            Cached(ref _argSortF, () => Auto<ArrayView<float>, ArrayView<long>, SortArgs>(IlgpuKernels.ArgSortFloat))(total, xs.F, output, p);
        else
            Cached(ref _argSortL, () => Auto<ArrayView<long>, ArrayView<long>, SortArgs>(IlgpuKernels.ArgSortLong))(total, xs.L, output, p);
    }
}
