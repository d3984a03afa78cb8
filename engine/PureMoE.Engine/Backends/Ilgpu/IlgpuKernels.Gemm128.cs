using System.Runtime.CompilerServices;
using ILGPU;

namespace PureMoE.Backends.Ilgpu;

/// <summary>Four floats read as one 16-byte value: ILGPU's PTX backend turns an aligned load of it into ld.v4.f32.</summary>
internal struct Float4x
{
    public float X, Y, Z, W;
}

// The large-tile SGEMM (the classic fp32 design for NVIDIA GPUs). A group of 256 threads computes a 128×128 tile
// of C; each thread holds an 8×8 register block: rows ty·4 + {0..3} and 64 + ty·4 + {0..3}, columns tx·4 + {0..3}
// and 64 + tx·4 + {0..3} (tx, ty in 0..15). Splitting the block in two halves 64 apart makes each thread's
// shared-memory reads two 16-byte loads per operand per k, and makes 8 neighbouring threads read 128 contiguous
// bytes (no bank conflicts). Threads are laid out 8 columns × 4 rows per 32 consecutive ids, so a 32-lane warp reads
// 8 distinct B vectors and 4 distinct A vectors per load (the layout is correct for any warp size; 32 is what it
// is tuned for). The K loop stages BK = 8 columns of A and rows of B through shared memory, both stored k-major
// (A transposed) with rows padded to 132 floats so the transposing stores are conflict-free too; two buffers let
// the next tile's global loads (held in registers) overlap the current tile's 512 multiply-adds with one barrier
// per tile. Global loads are scalar and coalesced along the operand's contiguous axis, and guarded (zero padding)
// like the stores, so any M, N, K, transposition, leading dimension and batch stride works. ILGPU 1.5.3 does not
// unroll loops: the 64 accumulators are locals (an array would live in local memory) and the 8×8 outer product is
// written out. Tiles are visited in groups of 8 tile rows so that blocks running together share A and B in L2.
// SgemmGrouped128 runs the same tile code over many GEMMs at once (grouped GEMM, MoE experts): each group reads
// its tile's GEMM (M, K, offsets) from a small table the host builds, so one launch covers every expert.
internal static partial class IlgpuKernels
{
    /// <summary>Threads per group of <see cref="Sgemm128"/>.</summary>
    public const int Gemm128Threads = 256;

    /// <summary>Tile size of <see cref="Sgemm128"/> along M and N.</summary>
    public const int Gemm128Tile = 128;

    private const int G128BK = 8;
    private const int G128Stride = 132;             // floats per k row of a staged tile (128 + 4 padding)
    private const int G128Stride4 = G128Stride / 4; // the same in Float4x
    private const int G128Buffer = G128BK * G128Stride;

    [IlgpuKernel]
    public static void Sgemm128(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmArgs p)
    {
        var as4 = SharedMemory.Allocate<Float4x>(2 * G128BK * G128Stride4);
        var bs4 = SharedMemory.Allocate<Float4x>(2 * G128BK * G128Stride4);

        // Grouped tile order: 8 tile rows at a time, column by column within the group.
        int tile = Grid.IdxX, batch = Grid.IdxY;
        int tilesM = (p.M + Gemm128Tile - 1) / Gemm128Tile, tilesN = p.TilesN;
        int perGroup = 8 * tilesN, firstM = tile / perGroup * 8, inGroup = tile % perGroup;
        int groupRows = Math.Min(tilesM - firstM, 8);
        int row0 = (firstM + inGroup % groupRows) * Gemm128Tile, col0 = inGroup / groupRows * Gemm128Tile;
        int aBase = p.OffA + batch * p.StrideA, bBase = p.OffB + batch * p.StrideB, cBase = p.OffC + batch * p.StrideC;
        Tile128(a, b, c, p, as4, bs4, row0, col0, aBase, bBase, cBase);
    }

    /// <summary>Ints per tile in the table of <see cref="SgemmGrouped128"/>: M, K, row0, col0, aBase, bBase, cBase.</summary>
    public const int GroupedTileInts = 7;

    /// <summary>
    /// Many independent GEMMs (the groups of a grouped GEMM) in one launch of the 128×128 tile code: group
    /// Grid.IdxX computes the tile described by its entry of <paramref name="tiles"/> (see <see cref="GroupedTileInts"/>):
    /// the tile's own M and K (its GEMM's), its first row and column, and its GEMM's element offsets in a, b and c.
    /// N, leading dimensions, transpositions and scales are shared (in <paramref name="p"/>).
    /// </summary>
    [IlgpuKernel]
    public static void SgemmGrouped128(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<int> tiles, GemmArgs p)
    {
        var as4 = SharedMemory.Allocate<Float4x>(2 * G128BK * G128Stride4);
        var bs4 = SharedMemory.Allocate<Float4x>(2 * G128BK * G128Stride4);
        int e = Grid.IdxX * GroupedTileInts;
        p.M = tiles[e];
        p.K = tiles[e + 1];
        Tile128(a, b, c, p, as4, bs4, tiles[e + 2], tiles[e + 3], tiles[e + 4], tiles[e + 5], tiles[e + 6]);
    }

    /// <summary>
    /// One 128×128 tile of C = alpha·op(A)·op(B) + beta·C starting at (row0, col0), for the matrices at element
    /// offsets aBase, bBase, cBase (the body of both large kernels; inlined, so each keeps its registers).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tile128(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmArgs p,
        ArrayView<Float4x> as4, ArrayView<Float4x> bs4, int row0, int col0, int aBase, int bBase, int cBase)
    {
        var asf = as4.Cast<float>();
        var bsf = bs4.Cast<float>();
        int t = Group.IdxX, lane = t & 31, warp = t >> 5;
        int tx = ((warp & 1) << 3) | (lane & 7), ty = ((warp >> 1) << 2) | (lane >> 3);

        // This thread's 4 elements of each 128×8 staged tile: along k when the operand is k-contiguous (A
        // untransposed, B transposed: 8 threads read one row's 8 consecutive k), else along rows (32 consecutive).
        int kMajorA = p.TransA == 0 ? 1 : 0, kMajorB = p.TransB != 0 ? 1 : 0;
        int aRc = kMajorA != 0 ? t >> 3 : t & 127, aKk = kMajorA != 0 ? t & 7 : t >> 7;
        int aRcStep = kMajorA != 0 ? 32 : 0, aKkStep = kMajorA != 0 ? 0 : 2;
        int bRc = kMajorB != 0 ? t >> 3 : t & 127, bKk = kMajorB != 0 ? t & 7 : t >> 7;
        int bRcStep = kMajorB != 0 ? 32 : 0, bKkStep = kMajorB != 0 ? 0 : 2;
        int aSh = aKk * G128Stride + aRc, aShStep = aKkStep * G128Stride + aRcStep;
        int bSh = bKk * G128Stride + bRc, bShStep = bKkStep * G128Stride + bRcStep;

        // Global indices of the 4 elements at k0 = 0 and the step per unit of k, hoisted out of the K loop: a
        // fetch is then one bounds test and one multiply-add. Out-of-range rows are never read (their index may wrap).
        int aKUnit = kMajorA != 0 ? 1 : p.Lda, aRUnit = kMajorA != 0 ? p.Lda : 1;
        int bKUnit = kMajorB != 0 ? 1 : p.Ldb, bRUnit = kMajorB != 0 ? p.Ldb : 1;
        int aR = row0 + aRc, bR = col0 + bRc;
        int ia0 = aBase + aR * aRUnit + aKk * aKUnit, iaStep = aRcStep * aRUnit + aKkStep * aKUnit;
        int ib0 = bBase + bR * bRUnit + bKk * bKUnit, ibStep = bRcStep * bRUnit + bKkStep * bKUnit;
        bool aOk0 = aR < p.M, aOk1 = aR + aRcStep < p.M, aOk2 = aR + 2 * aRcStep < p.M, aOk3 = aR + 3 * aRcStep < p.M;
        bool bOk0 = bR < p.N, bOk1 = bR + bRcStep < p.N, bOk2 = bR + 2 * bRcStep < p.N, bOk3 = bR + 3 * bRcStep < p.N;
        int aK1 = aKk + aKkStep, aK2 = aKk + 2 * aKkStep, aK3 = aKk + 3 * aKkStep;
        int bK1 = bKk + bKkStep, bK2 = bKk + 2 * bKkStep, bK3 = bKk + 3 * bKkStep;

        float pa0 = Fetch(a, aOk0 && aKk < p.K, ia0);
        float pa1 = Fetch(a, aOk1 && aK1 < p.K, ia0 + iaStep);
        float pa2 = Fetch(a, aOk2 && aK2 < p.K, ia0 + 2 * iaStep);
        float pa3 = Fetch(a, aOk3 && aK3 < p.K, ia0 + 3 * iaStep);
        float pb0 = Fetch(b, bOk0 && bKk < p.K, ib0);
        float pb1 = Fetch(b, bOk1 && bK1 < p.K, ib0 + ibStep);
        float pb2 = Fetch(b, bOk2 && bK2 < p.K, ib0 + 2 * ibStep);
        float pb3 = Fetch(b, bOk3 && bK3 < p.K, ib0 + 3 * ibStep);
        asf[aSh] = pa0; asf[aSh + aShStep] = pa1; asf[aSh + 2 * aShStep] = pa2; asf[aSh + 3 * aShStep] = pa3;
        bsf[bSh] = pb0; bsf[bSh + bShStep] = pb1; bsf[bSh + 2 * bShStep] = pb2; bsf[bSh + 3 * bShStep] = pb3;
        Group.Barrier();

        float c00 = 0f, c01 = 0f, c02 = 0f, c03 = 0f, c04 = 0f, c05 = 0f, c06 = 0f, c07 = 0f;
        float c10 = 0f, c11 = 0f, c12 = 0f, c13 = 0f, c14 = 0f, c15 = 0f, c16 = 0f, c17 = 0f;
        float c20 = 0f, c21 = 0f, c22 = 0f, c23 = 0f, c24 = 0f, c25 = 0f, c26 = 0f, c27 = 0f;
        float c30 = 0f, c31 = 0f, c32 = 0f, c33 = 0f, c34 = 0f, c35 = 0f, c36 = 0f, c37 = 0f;
        float c40 = 0f, c41 = 0f, c42 = 0f, c43 = 0f, c44 = 0f, c45 = 0f, c46 = 0f, c47 = 0f;
        float c50 = 0f, c51 = 0f, c52 = 0f, c53 = 0f, c54 = 0f, c55 = 0f, c56 = 0f, c57 = 0f;
        float c60 = 0f, c61 = 0f, c62 = 0f, c63 = 0f, c64 = 0f, c65 = 0f, c66 = 0f, c67 = 0f;
        float c70 = 0f, c71 = 0f, c72 = 0f, c73 = 0f, c74 = 0f, c75 = 0f, c76 = 0f, c77 = 0f;

        int cur = 0;
        for (int k0 = 0; k0 < p.K; k0 += G128BK)
        {
            // Next tile's global loads first: their latency hides behind this tile's arithmetic.
            bool next = k0 + G128BK < p.K;
            if (next)
            {
                int kn = k0 + G128BK, ka = ia0 + kn * aKUnit, kb = ib0 + kn * bKUnit;
                pa0 = Fetch(a, aOk0 && kn + aKk < p.K, ka);
                pa1 = Fetch(a, aOk1 && kn + aK1 < p.K, ka + iaStep);
                pa2 = Fetch(a, aOk2 && kn + aK2 < p.K, ka + 2 * iaStep);
                pa3 = Fetch(a, aOk3 && kn + aK3 < p.K, ka + 3 * iaStep);
                pb0 = Fetch(b, bOk0 && kn + bKk < p.K, kb);
                pb1 = Fetch(b, bOk1 && kn + bK1 < p.K, kb + ibStep);
                pb2 = Fetch(b, bOk2 && kn + bK2 < p.K, kb + 2 * ibStep);
                pb3 = Fetch(b, bOk3 && kn + bK3 < p.K, kb + 3 * ibStep);
            }

            int o = cur * G128BK * G128Stride4;
            for (int kk = 0; kk < G128BK; kk++, o += G128Stride4)
            {
                Float4x a0 = as4[o + ty], a1 = as4[o + 16 + ty];
                Float4x b0 = bs4[o + tx], b1 = bs4[o + 16 + tx];
                c00 += a0.X * b0.X; c01 += a0.X * b0.Y; c02 += a0.X * b0.Z; c03 += a0.X * b0.W;
                c04 += a0.X * b1.X; c05 += a0.X * b1.Y; c06 += a0.X * b1.Z; c07 += a0.X * b1.W;
                c10 += a0.Y * b0.X; c11 += a0.Y * b0.Y; c12 += a0.Y * b0.Z; c13 += a0.Y * b0.W;
                c14 += a0.Y * b1.X; c15 += a0.Y * b1.Y; c16 += a0.Y * b1.Z; c17 += a0.Y * b1.W;
                c20 += a0.Z * b0.X; c21 += a0.Z * b0.Y; c22 += a0.Z * b0.Z; c23 += a0.Z * b0.W;
                c24 += a0.Z * b1.X; c25 += a0.Z * b1.Y; c26 += a0.Z * b1.Z; c27 += a0.Z * b1.W;
                c30 += a0.W * b0.X; c31 += a0.W * b0.Y; c32 += a0.W * b0.Z; c33 += a0.W * b0.W;
                c34 += a0.W * b1.X; c35 += a0.W * b1.Y; c36 += a0.W * b1.Z; c37 += a0.W * b1.W;
                c40 += a1.X * b0.X; c41 += a1.X * b0.Y; c42 += a1.X * b0.Z; c43 += a1.X * b0.W;
                c44 += a1.X * b1.X; c45 += a1.X * b1.Y; c46 += a1.X * b1.Z; c47 += a1.X * b1.W;
                c50 += a1.Y * b0.X; c51 += a1.Y * b0.Y; c52 += a1.Y * b0.Z; c53 += a1.Y * b0.W;
                c54 += a1.Y * b1.X; c55 += a1.Y * b1.Y; c56 += a1.Y * b1.Z; c57 += a1.Y * b1.W;
                c60 += a1.Z * b0.X; c61 += a1.Z * b0.Y; c62 += a1.Z * b0.Z; c63 += a1.Z * b0.W;
                c64 += a1.Z * b1.X; c65 += a1.Z * b1.Y; c66 += a1.Z * b1.Z; c67 += a1.Z * b1.W;
                c70 += a1.W * b0.X; c71 += a1.W * b0.Y; c72 += a1.W * b0.Z; c73 += a1.W * b0.W;
                c74 += a1.W * b1.X; c75 += a1.W * b1.Y; c76 += a1.W * b1.Z; c77 += a1.W * b1.W;
            }

            if (next)
            {
                // The other buffer was last read before the previous iteration's barrier: safe to overwrite.
                int s = (cur ^ 1) * G128Buffer;
                asf[s + aSh] = pa0; asf[s + aSh + aShStep] = pa1; asf[s + aSh + 2 * aShStep] = pa2; asf[s + aSh + 3 * aShStep] = pa3;
                bsf[s + bSh] = pb0; bsf[s + bSh + bShStep] = pb1; bsf[s + bSh + 2 * bShStep] = pb2; bsf[s + bSh + 3 * bShStep] = pb3;
            }

            Group.Barrier();
            cur ^= 1;
        }

        int r0 = row0 + 4 * ty, r1 = r0 + 64, cA = col0 + 4 * tx, cB = cA + 64;
        StoreRow8(c, p, cBase, r0, cA, cB, c00, c01, c02, c03, c04, c05, c06, c07);
        StoreRow8(c, p, cBase, r0 + 1, cA, cB, c10, c11, c12, c13, c14, c15, c16, c17);
        StoreRow8(c, p, cBase, r0 + 2, cA, cB, c20, c21, c22, c23, c24, c25, c26, c27);
        StoreRow8(c, p, cBase, r0 + 3, cA, cB, c30, c31, c32, c33, c34, c35, c36, c37);
        StoreRow8(c, p, cBase, r1, cA, cB, c40, c41, c42, c43, c44, c45, c46, c47);
        StoreRow8(c, p, cBase, r1 + 1, cA, cB, c50, c51, c52, c53, c54, c55, c56, c57);
        StoreRow8(c, p, cBase, r1 + 2, cA, cB, c60, c61, c62, c63, c64, c65, c66, c67);
        StoreRow8(c, p, cBase, r1 + 3, cA, cB, c70, c71, c72, c73, c74, c75, c76, c77);
    }

    /// <summary>x[index], or 0 outside the matrix (the index is not read then).</summary>
    private static float Fetch(ArrayView<float> x, bool inside, int index) => inside ? x[index] : 0f;

    private static void StoreRow8(ArrayView<float> c, GemmArgs p, int cBase, int row, int cA, int cB,
        float v0, float v1, float v2, float v3, float v4, float v5, float v6, float v7)
    {
        if (row >= p.M) return;
        int o = cBase + row * p.Ldc;
        Store(c, p, o, cA, v0);
        Store(c, p, o, cA + 1, v1);
        Store(c, p, o, cA + 2, v2);
        Store(c, p, o, cA + 3, v3);
        Store(c, p, o, cB, v4);
        Store(c, p, o, cB + 1, v5);
        Store(c, p, o, cB + 2, v6);
        Store(c, p, o, cB + 3, v7);
    }
}
