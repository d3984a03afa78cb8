using ILGPU;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>Shape and scales of <see cref="IlgpuKernels.SplitKSum"/>.</summary>
public struct SplitKArgs
{
    /// <summary>C is M×N; the partials are <see cref="Slices"/> dense M×N matrices, one after another.</summary>
    public int M, N, Slices;
    /// <summary>C's row stride and the element offset of its first element.</summary>
    public int Ldc, OffC;
    /// <summary>C = Alpha·Σ partials + Beta·C (Beta = 0 does not read C).</summary>
    public float Alpha, Beta;
}

internal static partial class IlgpuKernels
{
    /// <summary>One thread per element of C: the slices' partial products added in slice order, then scaled.</summary>
    [IlgpuKernel]
    public static void SplitKSum(Index1D e, ArrayView<float> partials, ArrayView<float> c, SplitKArgs p)
    {
        int row = e / p.N, col = e % p.N, plane = p.M * p.N;
        float sum = 0f;
        for (int s = 0; s < p.Slices; s++) sum += partials[s * plane + e];
        int at = p.OffC + row * p.Ldc + col;
        c[at] = p.Beta == 0f ? p.Alpha * sum : p.Alpha * sum + p.Beta * c[at];
    }
}

// Split-K. A product with a small output and a long K (a weight gradient summed over many tokens, dW = dYᵀ·X; a
// router's gate) gives a GPU only a few tiles, and each loops over all of K while most multiprocessors idle. Cutting
// K into S slices gives S× the tiles: slice s computes P_s = op(A)[:, slice s]·op(B)[slice s, :] into its own dense
// M×N partial (the 64×64 kernel, run as a batch of products whose A and B start one slice further on; the last,
// shorter slice is a second launch), and one elementwise launch adds the partials in slice order:
// C = alpha·Σ P_s + beta·C. The slices depend only on the shape, so results are the same bits run to run.
public sealed partial class IlgpuBackend
{
    private Action<Index1D, ArrayView<float>, ArrayView<float>, SplitKArgs>? _splitKSum;

    /// <summary>Slices of K that Auto gives each one at least (32 steps of the 64×64 kernel's 16-deep tiles).</summary>
    internal const int MinSplitKSlice = 512;

    /// <summary>Forces the number of K slices of every single GEMM the 64×64 kernel can run (tests); null: Auto.</summary>
    internal int? ForcedSplitK { get; set; }

    /// <summary>
    /// K slices for a GEMM of this shape (1: no split). Auto splits a single product (batch 1) whose 64×64 tiles would
    /// leave more than half of the <paramref name="multiprocessors"/> idle and whose K is long (≥ 4 slices of
    /// <see cref="MinSplitKSlice"/>): enough slices to give every multiprocessor a tile, each at least
    /// <see cref="MinSplitKSlice"/> long.
    /// </summary>
    internal static int SplitKSlicesFor(int m, int n, int k, int batch, int multiprocessors)
    {
        long tiles = (long)((m + IlgpuKernels.Gemm64Tile - 1) / IlgpuKernels.Gemm64Tile) *
                     ((n + IlgpuKernels.Gemm64Tile - 1) / IlgpuKernels.Gemm64Tile);
        if (batch != 1 || 2 * tiles > multiprocessors || k < 4 * MinSplitKSlice) return 1;
        return (int)Math.Max(1, Math.Min(multiprocessors / tiles, k / MinSplitKSlice));
    }

    /// <summary>
    /// The slices this backend cuts a GEMM of this shape into (forced, or Auto on this accelerator's SMs), after
    /// rounding each slice to whole 16-deep tiles (<see cref="SliceLength"/>): 1 when that leaves a single slice.
    /// </summary>
    internal int SplitKSlices(int m, int n, int k, int batch)
    {
        if (!SupportsLargeGemm || batch != 1 || GemmKernel != GemmKernelChoice.Auto && ForcedSplitK is null) return 1;
        int asked = ForcedSplitK ?? SplitKSlicesFor(m, n, k, batch, Accelerator.NumMultiprocessors);
        if (asked <= 1 || k <= 1) return 1;
        int sliceK = SliceLength(k, asked);
        return (k + sliceK - 1) / sliceK;
    }

    /// <summary>Elements of K per slice for about <paramref name="slices"/> slices: whole 16-deep tiles; the last slice takes what is left.</summary>
    private static int SliceLength(int k, int slices) => ((k + slices - 1) / slices + 15) / 16 * 16;

    /// <summary>C = alpha·op(A)·op(B) + beta·C for one product, with K cut into about <paramref name="slices"/> slices.</summary>
    private void GemmSplitK(GemmArgs p, int slices, Storage a, Storage b, Storage c)
    {
        const string op = "Gemm";
        int m = p.M, n = p.N, k = p.K;
        int sliceK = SliceLength(k, slices);
        slices = (k + sliceK - 1) / sliceK;
        int lastK = k - (slices - 1) * sliceK;
        // One slice further on: k advances along A's rows when A is transposed, along its columns otherwise (B likewise).
        int aStep = sliceK * (p.TransA != 0 ? p.Lda : 1), bStep = sliceK * (p.TransB != 0 ? 1 : p.Ldb);

        using var partials = Rent(DType.Float32, slices * m * n, op);
        var kernel = Cached(ref _sgemm64, () => Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(IlgpuKernels.Sgemm64));
        var q = p;
        q.Ldc = n;
        q.Alpha = 1f;
        q.Beta = 0f;
        q.TilesN = (n + IlgpuKernels.Gemm64Tile - 1) / IlgpuKernels.Gemm64Tile;
        int tiles = (m + IlgpuKernels.Gemm64Tile - 1) / IlgpuKernels.Gemm64Tile * q.TilesN;
        void Launch(int firstSlice, int count, int sliceLength)
        {
            q.K = sliceLength;
            q.OffA = p.OffA + firstSlice * aStep;
            q.OffB = p.OffB + firstSlice * bStep;
            q.OffC = firstSlice * m * n;
            q.StrideA = aStep;
            q.StrideB = bStep;
            q.StrideC = m * n;
            kernel(new KernelConfig(new Index2D(tiles, count), new Index2D(IlgpuKernels.Gemm64Threads, 1)),
                F(a, op), F(b, op), partials.F, q);
        }
        // All slices in one launch when they are equally long (K a multiple of the slice: the usual case), so that
        // they run side by side; a shorter last slice takes a launch of its own after the others. (The H200 run
        // timed 512×512×16384 in 2 slices launched one after the other: no faster than 1 slice.)
        int equal = lastK == sliceK ? slices : slices - 1;
        for (int first = 0; first < equal; first += MaxGemmBatchPerLaunch)
            Launch(first, Math.Min(MaxGemmBatchPerLaunch, equal - first), sliceK);
        if (equal < slices) Launch(slices - 1, 1, lastK);

        var sum = Cached(ref _splitKSum, () => Auto<ArrayView<float>, ArrayView<float>, SplitKArgs>(IlgpuKernels.SplitKSum));
        sum(m * n, partials.F, F(c, op), new SplitKArgs
        {
            M = m, N = n, Slices = slices, Ldc = p.Ldc, OffC = p.OffC, Alpha = p.Alpha, Beta = p.Beta,
        });
    }
}
