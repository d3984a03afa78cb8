using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PureMoE.Backends.Cpu;

/// <summary>
/// Single-precision GEMM for the CPU backend: C = alpha * op(A) * op(B) + beta * C, row-major,
/// op(X) = X or Xᵀ.
/// </summary>
/// <remarks>
/// <para>
/// GotoBLAS/BLIS structure. Five loops around a register-tiled micro-kernel:
/// <c>jc</c> (NC columns of C) → <c>pc</c> (KC-deep slice of k; pack a KC×NC panel of op(B)) →
/// <c>ic</c> (MC rows; pack an MC×KC block of op(A)) → <c>jr</c> (NR columns) → <c>ir</c> (MR rows) →
/// micro-kernel, which accumulates an MR×NR tile of C in registers over KC steps.
/// Packing lays both operands out exactly in the order the micro-kernel reads them (contiguous,
/// zero-padded to whole tiles), so transposed operands cost nothing beyond the packing itself.
/// </para>
/// <para>
/// Threads own disjoint rectangles of C and never split k, so every element of C is summed in the same
/// order whatever the thread count or scheduling: results are bitwise reproducible.
/// </para>
/// </remarks>
public static partial class Sgemm
{
    // Below this many multiply-adds the fork/join cost of Parallel.For (a few µs) outweighs the gain.
    private const long ParallelThreshold = 1L << 21; // ≈ 128³

    /// <summary>
    /// C = alpha * op(A) * op(B) + beta * C. A is stored m×k (k×m if <paramref name="transA"/>),
    /// B is stored k×n (n×k if <paramref name="transB"/>); all row-major. When <paramref name="beta"/> is
    /// zero, C is overwritten and never read (NaNs in C do not propagate).
    /// </summary>
    /// <param name="transA">Use Aᵀ.</param>
    /// <param name="transB">Use Bᵀ.</param>
    /// <param name="m">Rows of op(A) and C.</param>
    /// <param name="n">Columns of op(B) and C.</param>
    /// <param name="k">Columns of op(A) = rows of op(B).</param>
    /// <param name="alpha">Scale of the product.</param>
    /// <param name="a">Storage of A.</param>
    /// <param name="aOffset">Element offset of A[0,0].</param>
    /// <param name="lda">Row stride (leading dimension) of stored A.</param>
    /// <param name="b">Storage of B.</param>
    /// <param name="bOffset">Element offset of B[0,0].</param>
    /// <param name="ldb">Row stride (leading dimension) of stored B.</param>
    /// <param name="beta">Scale of the existing C.</param>
    /// <param name="c">Storage of C.</param>
    /// <param name="cOffset">Element offset of C[0,0].</param>
    /// <param name="ldc">Row stride (leading dimension) of C.</param>
    public static void Multiply(bool transA, bool transB, int m, int n, int k, float alpha,
        float[] a, int aOffset, int lda, float[] b, int bOffset, int ldb, float beta, float[] c, int cOffset, int ldc)
    {
        var g = new Problem(transA, transB, m, n, k, alpha, a, aOffset, lda, b, bOffset, ldb, beta, c, cOffset, ldc);
        g.Validate();
        Run(in g, allowParallel: true);
    }

    /// <summary>
    /// <paramref name="batch"/> independent products C_i = alpha * op(A_i) * op(B_i) + beta * C_i, where
    /// matrix i of each operand starts at its offset plus i times its stride. Other arguments as in
    /// <see cref="Multiply"/>. Output matrices must not overlap.
    /// </summary>
    /// <param name="transA">Use Aᵀ.</param>
    /// <param name="transB">Use Bᵀ.</param>
    /// <param name="m">Rows of op(A) and C.</param>
    /// <param name="n">Columns of op(B) and C.</param>
    /// <param name="k">Columns of op(A) = rows of op(B).</param>
    /// <param name="alpha">Scale of the product.</param>
    /// <param name="a">Storage of A.</param>
    /// <param name="aOffset">Element offset of the first A.</param>
    /// <param name="lda">Row stride of stored A.</param>
    /// <param name="strideA">Element distance between consecutive A matrices.</param>
    /// <param name="b">Storage of B.</param>
    /// <param name="bOffset">Element offset of the first B.</param>
    /// <param name="ldb">Row stride of stored B.</param>
    /// <param name="strideB">Element distance between consecutive B matrices.</param>
    /// <param name="beta">Scale of the existing C.</param>
    /// <param name="c">Storage of C.</param>
    /// <param name="cOffset">Element offset of the first C.</param>
    /// <param name="ldc">Row stride of C.</param>
    /// <param name="strideC">Element distance between consecutive C matrices.</param>
    /// <param name="batch">Number of products.</param>
    public static void MultiplyBatched(bool transA, bool transB, int m, int n, int k, float alpha,
        float[] a, int aOffset, int lda, int strideA, float[] b, int bOffset, int ldb, int strideB,
        float beta, float[] c, int cOffset, int ldc, int strideC, int batch)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        if (batch == 0)
        {
            return;
        }

        var first = new Problem(transA, transB, m, n, k, alpha, a, aOffset, lda, b, bOffset, ldb, beta, c, cOffset, ldc);
        first.Validate();
        first.At(batch - 1, strideA, strideB, strideC).Validate();

        long work = (long)m * n * Math.Max(k, 1);
        int threads = Environment.ProcessorCount;
        bool parallelOverBatch = threads > 1 && batch > 1 && work * batch >= ParallelThreshold
            && (batch >= 2 * threads || work < ParallelThreshold);
        if (parallelOverBatch)
        {
            // Each product runs single-threaded on one worker: no nested fork/join, same bits as serial.
            Parallel.For(0, batch, i => Run(first.At(i, strideA, strideB, strideC), allowParallel: false));
        }
        else
        {
            for (int i = 0; i < batch; i++)
            {
                Run(first.At(i, strideA, strideB, strideC), allowParallel: true);
            }
        }
    }

    private static void Run(in Problem g, bool allowParallel)
    {
        if (g.M == 0 || g.N == 0)
        {
            return;
        }

        if (g.K == 0 || g.Alpha == 0f)
        {
            ScaleC(in g);
            return;
        }

        if (g.M <= SmallM && g.TransB)
        {
            MultiplySmallM(in g, allowParallel);
            return;
        }

        // Split C into `threads` slabs along its longer side, in whole tiles so that no tile straddles
        // two threads. Row slabs share one packed panel of B (packed by all threads together, see
        // MultiplyRowSlabsSharingB); column slabs each pack their own part of B and all of A, the smaller operand.
        // (Reading Mr/Nr here also guarantees the kernel configuration is initialised before the
        // AggressiveOptimization methods below are compiled, so the JIT can fold it as constants.)
        bool splitRows = g.M >= g.N;
        int extent = splitRows ? g.M : g.N;
        int tile = splitRows ? Mr : Nr;
        int tiles = (extent + tile - 1) / tile;
        int threads = allowParallel ? Environment.ProcessorCount : 1;
        int chunks = Math.Min(threads, tiles);
        if (chunks <= 1 || (long)g.M * g.N * g.K < ParallelThreshold)
        {
            MultiplyBlock(in g, 0, g.M, 0, g.N);
            return;
        }

        if (splitRows && ShareBPanel)
        {
            MultiplyRowSlabsSharingB(in g, chunks);
            return;
        }

        Problem local = g;
        Parallel.For(0, chunks, t =>
        {
            int start = (int)((long)tiles * t / chunks) * tile;
            int end = Math.Min(extent, (int)((long)tiles * (t + 1) / chunks) * tile);
            if (splitRows)
            {
                MultiplyBlock(in local, start, end, 0, local.N);
            }
            else
            {
                MultiplyBlock(in local, 0, local.M, start, end);
            }
        });
    }

    /// <summary>C = beta * C (the whole answer when k = 0 or alpha = 0). beta = 0 writes zeros.</summary>
    private static void ScaleC(in Problem g)
    {
        for (int i = 0; i < g.M; i++)
        {
            Span<float> row = g.C.AsSpan(g.COffset + i * g.Ldc, g.N);
            if (g.Beta == 0f)
            {
                row.Clear();
            }
            else if (g.Beta != 1f)
            {
                for (int j = 0; j < row.Length; j++)
                {
                    row[j] *= g.Beta;
                }
            }
        }
    }

    /// <summary>All arguments of one product, so they can be handed to workers as a unit.</summary>
    private readonly record struct Problem(bool TransA, bool TransB, int M, int N, int K, float Alpha,
        float[] A, int AOffset, int Lda, float[] B, int BOffset, int Ldb, float Beta, float[] C, int COffset, int Ldc)
    {
        public Problem At(int index, int strideA, int strideB, int strideC) => this with
        {
            AOffset = checked(AOffset + index * strideA),
            BOffset = checked(BOffset + index * strideB),
            COffset = checked(COffset + index * strideC),
        };

        public void Validate()
        {
            ArgumentNullException.ThrowIfNull(A, "a");
            ArgumentNullException.ThrowIfNull(B, "b");
            ArgumentNullException.ThrowIfNull(C, "c");
            ArgumentOutOfRangeException.ThrowIfNegative(M, "m");
            ArgumentOutOfRangeException.ThrowIfNegative(N, "n");
            ArgumentOutOfRangeException.ThrowIfNegative(K, "k");
            CheckExtent(C, COffset, Ldc, M, N, "c", "ldc");
            if (M == 0 || N == 0 || K == 0)
            {
                return;
            }

            if (TransA)
            {
                CheckExtent(A, AOffset, Lda, K, M, "a", "lda");
            }
            else
            {
                CheckExtent(A, AOffset, Lda, M, K, "a", "lda");
            }

            if (TransB)
            {
                CheckExtent(B, BOffset, Ldb, N, K, "b", "ldb");
            }
            else
            {
                CheckExtent(B, BOffset, Ldb, K, N, "b", "ldb");
            }
        }

        private static void CheckExtent(float[] x, int offset, int ld, int rows, int cols, string name, string ldName)
        {
            if (rows == 0 || cols == 0)
            {
                return;
            }

            if (ld < cols)
            {
                throw new ArgumentOutOfRangeException(ldName, ld, $"Leading dimension must be at least {cols}.");
            }

            long last = offset + (long)(rows - 1) * ld + cols - 1;
            if (offset < 0 || last >= x.Length)
            {
                throw new ArgumentException(
                    $"Matrix {name} ({rows}x{cols}, ld {ld}, offset {offset}) exceeds its array of length {x.Length}.", name);
            }
        }
    }

    /// <summary>Thread-local, 64-byte-alignable pack buffers, grown on demand and reused across calls.</summary>
    private sealed class PackBuffers
    {
        [ThreadStatic]
        private static PackBuffers? current;

        public float[] A = [];
        public float[] B = [];
        public float[] Tile = [];

        public static PackBuffers ForCurrentThread(int aLength, int bLength)
        {
            PackBuffers buffers = current ??= new PackBuffers();
            // Pinned (POH) so the aligned pointer computed under `fixed` is stable; +16 floats of slack for alignment.
            if (buffers.A.Length < aLength + 16)
            {
                buffers.A = GC.AllocateUninitializedArray<float>(aLength + 16, pinned: true);
            }

            if (buffers.B.Length < bLength + 16)
            {
                buffers.B = GC.AllocateUninitializedArray<float>(bLength + 16, pinned: true);
            }

            if (buffers.Tile.Length < Mr * Nr + 16)
            {
                buffers.Tile = GC.AllocateUninitializedArray<float>(Mr * Nr + 16, pinned: true);
            }

            return buffers;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe float* Align64(float* p) => (float*)(((nint)p + 63) & ~(nint)63);

    /// <summary>Serial blocked GEMM on the rows [i0, i1) × columns [j0, j1) of C.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void MultiplyBlock(in Problem g, int i0, int i1, int j0, int j1)
    {
        int kcMax = Math.Min(Kc, g.K);
        int ncMax = RoundUp(Math.Min(Nc, j1 - j0), Nr);
        PackBuffers buffers = PackBuffers.ForCurrentThread(0, kcMax * ncMax);
        nint bRow = g.TransB ? 1 : g.Ldb, bCol = g.TransB ? g.Ldb : 1;
        fixed (float* bBase = g.B, bPackRaw = buffers.B)
        {
            float* b = bBase + g.BOffset, bPack = Align64(bPackRaw);
            for (int jc = j0; jc < j1; jc += Nc)
            {
                int nc = Math.Min(Nc, j1 - jc);
                for (int pc = 0; pc < g.K; pc += Kc)
                {
                    int kc = Math.Min(Kc, g.K - pc);
                    PackB(b + pc * bRow + jc * bCol, bRow, bCol, kc, nc, bPack);
                    MultiplyRowsByPanel(in g, i0, i1, jc, nc, pc, kc, bPack);
                }
            }
        }
    }

    /// <summary>
    /// Rows [i0, i1) of C, columns [jc, jc + nc), times the packed KC×NC panel of op(B) for k in [pc, pc + kc): packs
    /// MC×KC blocks of op(A) into this thread's buffer and runs the micro-kernel over the tiles.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void MultiplyRowsByPanel(in Problem g, int i0, int i1, int jc, int nc, int pc, int kc, float* bPack)
    {
        int mcMax = RoundUp(Math.Min(Mc, i1 - i0), Mr);
        PackBuffers buffers = PackBuffers.ForCurrentThread(mcMax * kc, 0);

        // Element (r, c) of op(A) lives at a[r * aRow + c * aCol].
        nint aRow = g.TransA ? 1 : g.Lda, aCol = g.TransA ? g.Lda : 1;
        nint ldc = g.Ldc;
        // beta applies once, on the first k-slice; later slices accumulate onto C.
        float beta = pc == 0 ? g.Beta : 1f;
        // A thin product uses each element of A for only a few tile rows of FMAs, so packing A costs about as much
        // as computing with it: the micro-kernel reads whole row tiles of A in place instead (with A's strides), and
        // only ragged row tiles are packed. Up to two Nr panels of columns whatever A's layout (AVX-512, single-
        // threaded: N = 32 went from 83–97 to 111–114 GFLOP/s, Aᵀ 55 to 97–103; N = 64 from 91–99 to 105–114), and up
        // to four when A is row-major (AVX2 on Zen 3: 4096×64×512 74 → 84 GFLOP/s, 2048×64×128 83 → 92; a stored Aᵀ
        // read in place strides a whole row of it per k and lost there: 51 → 35). At N = 128 and 256 in place and
        // packed measured the same (bench/RESULTS.md).
        bool directA = nc <= 2 * Nr || (!g.TransA && nc <= 4 * Nr);

        fixed (float* aBase = g.A, cBase = g.C)
        fixed (float* aPackRaw = buffers.A, tileRaw = buffers.Tile)
        {
            float* aPack = Align64(aPackRaw), tile = Align64(tileRaw);
            float* a = aBase + g.AOffset, c = cBase + g.COffset;
            for (int ic = i0; ic < i1; ic += Mc)
            {
                int mc = Math.Min(Mc, i1 - ic);
                if (!directA)
                {
                    PackA(a + ic * aRow + pc * aCol, aRow, aCol, mc, kc, aPack);
                }

                for (int jr = 0; jr < nc; jr += Nr)
                {
                    int nr = Math.Min(Nr, nc - jr);
                    float* bPanel = bPack + (nint)jr * kc;
                    for (int ir = 0; ir < mc; ir += Mr)
                    {
                        int mr = Math.Min(Mr, mc - ir);
                        float* cTile = c + (ic + ir) * ldc + jc + jr;
                        if (directA)
                        {
                            DirectTile(in g, a + (ic + ir) * aRow + pc * aCol, mr, nr, kc, bPanel, aPack, tile, cTile, ldc, beta);
                            continue;
                        }

                        float* aPanel = aPack + (nint)ir * kc;
                        if (mr == Mr && nr == Nr)
                        {
                            MicroKernel(kc, aPanel, 1, Mr, bPanel, cTile, ldc, g.Alpha, beta);
                        }
                        else
                        {
                            // Partial tile: compute the full padded tile into scratch, then merge.
                            MicroKernel(kc, aPanel, 1, Mr, bPanel, tile, Nr, 1f, 0f);
                            MergeTile(tile, cTile, ldc, mr, nr, g.Alpha, beta);
                        }
                    }
                }
            }
        }
    }

    /// <summary>
    /// One tile of a thin product with A read in place by <see cref="MicroKernel"/> (A's own strides instead of the
    /// packed panel's). A ragged row tile (mr &lt; Mr) is packed first, so the kernel never reads past A's last row;
    /// a ragged tile goes through the scratch tile.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void DirectTile(in Problem g, float* aTile, int mr, int nr, int kc, float* bPanel, float* aPack,
        float* tile, float* cTile, nint ldc, float beta)
    {
        bool full = mr == Mr && nr == Nr; // the kernel writes a whole Mr×Nr tile: ragged ones go through scratch
        float* dst = full ? cTile : tile;
        nint ldDst = full ? ldc : Nr;
        float alpha = full ? g.Alpha : 1f, betaDst = full ? beta : 0f;
        nint rowStep = g.TransA ? 1 : g.Lda, colStep = g.TransA ? g.Lda : 1;
        if (mr < Mr)
        {
            PackA(aTile, rowStep, colStep, mr, kc, aPack);
            MicroKernel(kc, aPack, 1, Mr, bPanel, dst, ldDst, alpha, betaDst);
        }
        else
        {
            MicroKernel(kc, aTile, rowStep, colStep, bPanel, dst, ldDst, alpha, betaDst);
        }

        if (!full)
        {
            MergeTile(tile, cTile, ldc, mr, nr, g.Alpha, beta);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void MergeTile(float* tile, float* c, nint ldc, int mr, int nr, float alpha, float beta)
    {
        var alphas = Vector256.Create(alpha);
        var betas = Vector256.Create(beta);
        for (int i = 0; i < mr; i++)
        {
            float* src = tile + i * Nr;
            float* dst = c + i * ldc;
            int j = 0;
            if (Fma.IsSupported)
            {
                // Thin products (N = 8 or 16, as a router's gate or a small head) merge every tile: 8 lanes at a time.
                for (; j + 8 <= nr; j += 8)
                {
                    var product = alphas * Vector256.Load(src + j);
                    Vector256.Store(beta == 0f ? product : Fma.MultiplyAdd(betas, Vector256.Load(dst + j), product), dst + j);
                }
            }

            for (; j < nr; j++)
            {
                // Same rounding as the vector store path: alpha*acc, then one fused beta*C + (alpha*acc).
                dst[j] = beta == 0f ? alpha * src[j] : MathF.FusedMultiplyAdd(beta, dst[j], alpha * src[j]);
            }
        }
    }

    private static int RoundUp(int x, int multiple) => (x + multiple - 1) / multiple * multiple;
}
