using ILGPU;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>Parameters of the SGEMM kernel (one struct: kernel launchers take a bounded number of arguments).</summary>
public struct GemmArgs
{
    /// <summary>C is M×N, the inner dimension K.</summary>
    public int M, N, K;
    /// <summary>Row strides.</summary>
    public int Lda, Ldb, Ldc;
    /// <summary>Batch strides (0 broadcasts).</summary>
    public int StrideA, StrideB, StrideC;
    /// <summary>Element offsets of the first matrices.</summary>
    public int OffA, OffB, OffC;
    /// <summary>1 when the operand is transposed.</summary>
    public int TransA, TransB;
    /// <summary>Thread grid of a group of the tiled kernel: TX columns × TY rows of threads (unused by the 128×128 kernel).</summary>
    public int TX, TY;
    /// <summary>Number of tiles along N.</summary>
    public int TilesN;
    /// <summary>Scales.</summary>
    public float Alpha, Beta;
}

// Tiled SGEMM. A group of TX×TY threads (GroupSize threads, from the accelerator) computes a tile of
// BM = 4·TY rows × BN = 4·TX columns of C: each thread holds a 4×4 register block (rows ty + i·TY, columns
// tx + j·TX, so stores are coalesced across tx). The K loop stages BK = 8 columns of A and rows of B through
// shared memory (A stored k-major so both operands are read along the thread's fast index); loads handle
// transposition, ragged edges (zero padding) and batch strides. ILGPU 1.5.3 does not unroll loops, so the
// register block's 16 multiply-adds are written out by hand.
internal static partial class IlgpuKernels
{
    public const int GemmBK = 8;

    [IlgpuKernel]
    public static void Sgemm(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmArgs p)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int TX = p.TX, TY = p.TY, T = TX * TY;
        int BM = 4 * TY, BN = 4 * TX;
        var As = shared.SubView(0, GemmBK * BM);
        var Bs = shared.SubView(GemmBK * BM, GemmBK * BN);
        int tile = Grid.IdxX, batch = Grid.IdxY;
        int row0 = tile / p.TilesN * BM, col0 = tile % p.TilesN * BN;
        int t = Group.IdxX, tx = t % TX, ty = t / TX;
        int aBase = p.OffA + batch * p.StrideA, bBase = p.OffB + batch * p.StrideB, cBase = p.OffC + batch * p.StrideC;

        float c00 = 0f, c01 = 0f, c02 = 0f, c03 = 0f;
        float c10 = 0f, c11 = 0f, c12 = 0f, c13 = 0f;
        float c20 = 0f, c21 = 0f, c22 = 0f, c23 = 0f;
        float c30 = 0f, c31 = 0f, c32 = 0f, c33 = 0f;

        for (int k0 = 0; k0 < p.K; k0 += GemmBK)
        {
            // Stage A[row0 .. row0+BM, k0 .. k0+BK) as As[kk·BM + r], reading memory along its contiguous axis.
            for (int e = t; e < BM * GemmBK; e += T)
            {
                int r, kk;
                if (p.TransA != 0) { r = e % BM; kk = e / BM; }
                else { kk = e % GemmBK; r = e / GemmBK; }
                int gr = row0 + r, gk = k0 + kk;
                float v = 0f;
                if (gr < p.M && gk < p.K) v = p.TransA != 0 ? a[aBase + gk * p.Lda + gr] : a[aBase + gr * p.Lda + gk];
                As[kk * BM + r] = v;
            }
            // Stage B[k0 .. k0+BK, col0 .. col0+BN) as Bs[kk·BN + cc].
            for (int e = t; e < BN * GemmBK; e += T)
            {
                int cc, kk;
                if (p.TransB != 0) { kk = e % GemmBK; cc = e / GemmBK; }
                else { cc = e % BN; kk = e / BN; }
                int gc = col0 + cc, gk = k0 + kk;
                float v = 0f;
                if (gc < p.N && gk < p.K) v = p.TransB != 0 ? b[bBase + gc * p.Ldb + gk] : b[bBase + gk * p.Ldb + gc];
                Bs[kk * BN + cc] = v;
            }
            Group.Barrier();
            for (int kk = 0; kk < GemmBK; kk++)
            {
                int ao = kk * BM + ty, bo = kk * BN + tx;
                float a0 = As[ao], a1 = As[ao + TY], a2 = As[ao + 2 * TY], a3 = As[ao + 3 * TY];
                float b0 = Bs[bo], b1 = Bs[bo + TX], b2 = Bs[bo + 2 * TX], b3 = Bs[bo + 3 * TX];
                c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
            }
            Group.Barrier();
        }

        int r0 = row0 + ty, cc0 = col0 + tx;
        StoreRow(c, p, cBase, r0, cc0, c00, c01, c02, c03);
        StoreRow(c, p, cBase, r0 + TY, cc0, c10, c11, c12, c13);
        StoreRow(c, p, cBase, r0 + 2 * TY, cc0, c20, c21, c22, c23);
        StoreRow(c, p, cBase, r0 + 3 * TY, cc0, c30, c31, c32, c33);
    }

    private static void StoreRow(ArrayView<float> c, GemmArgs p, int cBase, int row, int col, float v0, float v1, float v2, float v3)
    {
        if (row >= p.M) return;
        int o = cBase + row * p.Ldc;
        Store(c, p, o, col, v0);
        Store(c, p, o, col + p.TX, v1);
        Store(c, p, o, col + 2 * p.TX, v2);
        Store(c, p, o, col + 3 * p.TX, v3);
    }

    private static void Store(ArrayView<float> c, GemmArgs p, int rowBase, int col, float acc)
    {
        if (col >= p.N) return;
        int at = rowBase + col;
        // beta = 0 overwrites: C is not read (it may hold NaN).
        c[at] = p.Beta == 0f ? p.Alpha * acc : p.Alpha * acc + p.Beta * c[at];
    }
}

/// <summary>Which SGEMM kernel <see cref="IlgpuBackend.Gemm"/> runs (a tuning and testing knob; Auto chooses by shape).</summary>
internal enum GemmKernelChoice
{
    /// <summary>
    /// By shape: the 128×128 kernel when it fills the device, else the 64×64 one; the group-size tiled kernel where
    /// the accelerator cannot run 256-thread groups.
    /// </summary>
    Auto,
    /// <summary>Always the group-size tiled kernel with 4×4 register blocks (<see cref="IlgpuKernels.Sgemm"/>).</summary>
    Tiled,
    /// <summary>The 64×64 kernel with 4×4 register blocks (<see cref="IlgpuKernels.Sgemm64"/>) wherever the accelerator allows it.</summary>
    Medium,
    /// <summary>The 128×128 kernel with 8×8 register blocks (<see cref="IlgpuKernels.Sgemm128"/>) wherever the accelerator allows it.</summary>
    Large,
}

public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>? _sgemm;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>? _sgemm64;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>? _sgemm128;

    /// <summary>Threads per SGEMM group along columns (TX) and rows (TY): TX·TY = GroupSize, TX ≥ TY.</summary>
    public (int TX, int TY) GemmThreads
    {
        get
        {
            int log = 31 - int.LeadingZeroCount(GroupSize);
            int tx = 1 << ((log + 1) / 2);
            return (tx, GroupSize / tx);
        }
    }

    /// <summary>Kernel override for benchmarks and tests (Auto by default).</summary>
    internal GemmKernelChoice GemmKernel { get; set; }

    /// <summary>
    /// True when the accelerator can run <see cref="IlgpuKernels.Sgemm128"/> and <see cref="IlgpuKernels.Sgemm64"/> and
    /// their grouped forms (256 threads, 16.9 and 17.4 KB of shared memory per group).
    /// </summary>
    internal bool SupportsLargeGemm =>
        Accelerator.MaxNumThreadsPerGroup >= IlgpuKernels.Gemm128Threads &&
        Accelerator.MaxSharedMemoryPerGroup >= Math.Max(IlgpuKernels.Gemm128SharedBytes, IlgpuKernels.Gemm64SharedBytes);

    /// <summary>
    /// The kernel a GEMM of this shape runs. Auto takes the 128×128 kernel when both sides span a tile and its tiles
    /// alone give every multiprocessor a group: it does twice the work per shared-memory read of the 64×64 kernel,
    /// but on 4× fewer tiles, which leave a GPU partly idle on small products (MoE expert GEMMs). Otherwise the 64×64
    /// kernel, and the group-size tiled kernel only where 256-thread groups are not allowed (both compute the same
    /// 64×64 tiles on a 256-thread group; the 64×64 kernel's loop reads vectors and has no bounds tests).
    /// </summary>
    internal GemmKernelChoice GemmKernelFor(int m, int n, int batch) => GemmKernel switch
    {
        GemmKernelChoice.Tiled => GemmKernelChoice.Tiled,
        GemmKernelChoice.Medium => SupportsLargeGemm ? GemmKernelChoice.Medium : GemmKernelChoice.Tiled,
        GemmKernelChoice.Large => SupportsLargeGemm ? GemmKernelChoice.Large : GemmKernelChoice.Tiled,
        _ when !SupportsLargeGemm => GemmKernelChoice.Tiled,
        _ => m >= 128 && n >= 128 && (long)((m + 127) / 128) * ((n + 127) / 128) * batch >= Accelerator.NumMultiprocessors
            ? GemmKernelChoice.Large
            : GemmKernelChoice.Medium,
    };

    /// <inheritdoc />
    public void Gemm(bool transA, bool transB, int m, int n, int k, double alpha,
        Storage a, int aOffset, int lda, int strideA,
        Storage b, int bOffset, int ldb, int strideB,
        double beta, Storage c, int cOffset, int ldc, int strideC, int batch)
    {
        if (m == 0 || n == 0 || batch == 0) return;
        var p = new GemmArgs
        {
            M = m, N = n, K = k, Lda = lda, Ldb = ldb, Ldc = ldc,
            StrideA = strideA, StrideB = strideB, StrideC = strideC,
            OffA = aOffset, OffB = bOffset, OffC = cOffset,
            TransA = transA ? 1 : 0, TransB = transB ? 1 : 0,
            Alpha = (float)alpha, Beta = (float)beta,
        };
        // A small output over a long K: K in slices, each on its own tiles (IlgpuBackend.SplitK.cs).
        if (SplitKSlices(m, n, k, batch) is > 1 and var slices)
        {
            GemmSplitK(p, slices, a, b, c);
            return;
        }
        var choice = GemmKernelFor(m, n, batch);
        var (tx, ty) = GemmThreads;
        var (bm, bn, threads) = choice switch
        {
            GemmKernelChoice.Large => (IlgpuKernels.Gemm128Tile, IlgpuKernels.Gemm128Tile, IlgpuKernels.Gemm128Threads),
            GemmKernelChoice.Medium => (IlgpuKernels.Gemm64Tile, IlgpuKernels.Gemm64Tile, IlgpuKernels.Gemm64Threads),
            _ => (4 * ty, 4 * tx, tx * ty),
        };
        int tilesM = (m + bm - 1) / bm;
        p.TilesN = (n + bn - 1) / bn;
        p.TX = tx;
        p.TY = ty;
        var kernel = choice switch
        {
            GemmKernelChoice.Large => Cached(ref _sgemm128, () => Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(IlgpuKernels.Sgemm128)),
            GemmKernelChoice.Medium => Cached(ref _sgemm64, () => Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(IlgpuKernels.Sgemm64)),
            _ => Cached(ref _sgemm, () => Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(IlgpuKernels.Sgemm)),
        };
        // The batch is the grid's y dimension, which CUDA caps at 65,535: a larger batch takes several launches,
        // each starting its matrices further on.
        for (int first = 0; first < batch; first += MaxGemmBatchPerLaunch)
        {
            int count = Math.Min(MaxGemmBatchPerLaunch, batch - first);
            p.OffA = aOffset + first * strideA;
            p.OffB = bOffset + first * strideB;
            p.OffC = cOffset + first * strideC;
            var config = choice == GemmKernelChoice.Tiled
                ? new KernelConfig(new Index2D(tilesM * p.TilesN, count), new Index2D(threads, 1),
                    SharedMemoryConfig.RequestDynamic<float>(IlgpuKernels.GemmBK * (bm + bn)))
                : new KernelConfig(new Index2D(tilesM * p.TilesN, count), new Index2D(threads, 1));
            kernel(config, F(a, "Gemm"), F(b, "Gemm"), F(c, "Gemm"), p);
        }
    }

    /// <summary>
    /// Most matrices one GEMM launch covers: the accelerator's largest grid y dimension (65,535 on CUDA). Tests
    /// lower it to run the multi-launch path on the emulator, whose grid has no such limit.
    /// </summary>
    internal int MaxGemmBatchPerLaunch
    {
        get => _maxGemmBatchPerLaunch ??= Math.Max(1, Accelerator.MaxGridSize.Y);
        set => _maxGemmBatchPerLaunch = value;
    }

    private int? _maxGemmBatchPerLaunch;
}
