using System.Runtime.CompilerServices;
using ILGPU;

namespace PureMoE.Backends.Ilgpu;

/// <summary>The 4×4 register block of a <see cref="IlgpuKernels.Sgemm64"/> thread: C{row}{column}.</summary>
internal struct Accumulators4x4
{
    public float C00, C01, C02, C03;
    public float C10, C11, C12, C13;
    public float C20, C21, C22, C23;
    public float C30, C31, C32, C33;
}

// The medium-tile SGEMM: Sgemm128's design at a quarter of the tile, for products too small to give every
// multiprocessor a 128×128 tile (the MoE layer's dense projections, attention, a small model's whole step). A group
// of 256 threads computes a 64×64 tile of C; each thread holds a 4×4 register block, rows ty·4 + {0..3} and columns
// tx·4 + {0..3} (tx, ty in 0..15, laid out 8 columns × 4 rows per 32 consecutive ids as in Sgemm128), so each step
// of k reads one 16-byte vector of A and one of B from shared memory for 16 multiply-adds (the group-size tiled
// kernel reads 8 scalars). The K loop stages BK = 16 columns of A and rows of B, both k-major with rows padded to 68
// floats, double-buffered with one barrier per tile; each thread stages 4 elements per operand, 2 rows 32 apart at 2
// k 8 apart, whatever the layout, so its shared-memory stores are constant offsets from one address. With a quarter
// of Sgemm128's multiply-adds per k, a tile of 16 k (not 8) spreads the loop's fixed cost (the barrier, addresses,
// the branch) over 256 multiply-adds per thread; the staged values in flight (8 registers) keep the kernel near 64
// registers. As in Sgemm128 the 16 steps are written out, rows past M or N are read clamped (their products are
// never stored) and K's remainder is the prologue's guarded first tile, so the loop has no bounds test. Any M, N, K, transposition, leading dimension
// and batch stride works. SgemmGrouped64 runs the same tile code over many GEMMs at once, from the table
// SgemmGrouped128 reads.
internal static partial class IlgpuKernels
{
    /// <summary>Threads per group of <see cref="Sgemm64"/>.</summary>
    public const int Gemm64Threads = 256;

    /// <summary>Tile size of <see cref="Sgemm64"/> along M and N.</summary>
    public const int Gemm64Tile = 64;

    /// <summary>Shared memory of a <see cref="Sgemm64"/> group: two buffers of a 64×16 tile of each operand (17.4 KB).</summary>
    public const int Gemm64SharedBytes = 2 * 2 * G64BK * G64Stride * sizeof(float);

    private const int G64BK = 16;
    private const int G64Stride = 68;             // floats per k row of a staged tile (64 + 4 padding)
    private const int G64Stride4 = G64Stride / 4; // the same in Float4x
    private const int G64Buffer = G64BK * G64Stride;

    [IlgpuKernel]
    public static void Sgemm64(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmArgs p)
    {
        var as4 = SharedMemory.Allocate<Float4x>(2 * G64BK * G64Stride4);
        var bs4 = SharedMemory.Allocate<Float4x>(2 * G64BK * G64Stride4);

        int batch = Grid.IdxY;
        var origin = GroupedTileOrigin(Grid.IdxX, p.M, p.TilesN, Gemm64Tile);
        int aBase = p.OffA + batch * p.StrideA, bBase = p.OffB + batch * p.StrideB, cBase = p.OffC + batch * p.StrideC;
        var acc = Accumulate64(a, b, p, as4, bs4, origin.X, origin.Y, aBase, bBase);
        Store64(c, p, cBase, origin.X, origin.Y, acc);
    }

    /// <summary>
    /// <see cref="SgemmGrouped128"/>'s design with the 64×64 tile: many independent GEMMs in one launch, group
    /// Grid.IdxX computing the tile its entry of <paramref name="tiles"/> describes (the same table layout,
    /// <see cref="GroupedTileInts"/> ints per tile). For grouped GEMMs whose 128×128 tiles are too few to give every
    /// multiprocessor one: a launch per group would queue the groups one after another, each too small to fill the
    /// device, where this runs them all at once on 4× as many tiles.
    /// </summary>
    [IlgpuKernel]
    public static void SgemmGrouped64(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GroupOperands operands,
        ArrayView<int> tiles, GemmArgs p)
    {
        var as4 = SharedMemory.Allocate<Float4x>(2 * G64BK * G64Stride4);
        var bs4 = SharedMemory.Allocate<Float4x>(2 * G64BK * G64Stride4);
        int e = Grid.IdxX * GroupedTileInts;
        p.M = tiles[e];
        p.K = tiles[e + 1];
        int bSlot = tiles[e + 7];
        var acc = Accumulate64(a, bSlot < 0 ? b : operands.Get(bSlot), p, as4, bs4, tiles[e + 2], tiles[e + 3], tiles[e + 4], tiles[e + 5]);
        // Where the tile goes is read again after the K loop: none of it is held in registers through the loop.
        p.M = tiles[e];
        int cSlot = tiles[e + 8];
        Store64(cSlot < 0 ? c : operands.Get(cSlot), p, tiles[e + 6], tiles[e + 2], tiles[e + 3], acc);
    }

    /// <summary>
    /// The products of one 64×64 tile of op(A)·op(B) starting at (row0, col0), for the matrices at element offsets
    /// aBase and bBase: this thread's 4×4 block (the body of both 64×64 kernels; inlined, so each keeps its
    /// registers). <see cref="Store64"/> writes it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Accumulators4x4 Accumulate64(ArrayView<float> a, ArrayView<float> b, GemmArgs p,
        ArrayView<Float4x> as4, ArrayView<Float4x> bs4, int row0, int col0, int aBase, int bBase)
    {
        var asf = as4.Cast<float>();
        var bsf = bs4.Cast<float>();
        int t = Group.IdxX, lane = t & 31, warp = t >> 5;
        int tx = ((warp & 1) << 3) | (lane & 7), ty = ((warp >> 1) << 2) | (lane >> 3);

        // This thread's 4 elements of each 64×16 staged tile: rows (of A; columns of B) rc and rc + 32, at k = kk and
        // kk + 8 (the 64×8 staging of Sgemm128's design, twice).
        bool kMajorA = p.TransA == 0, kMajorB = p.TransB != 0;
        int aRc = kMajorA ? t >> 3 : t & 31, aKk = kMajorA ? t & 7 : t >> 5;
        int bRc = kMajorB ? t >> 3 : t & 31, bKk = kMajorB ? t & 7 : t >> 5;
        int aKUnit = kMajorA ? 1 : p.Lda, bKUnit = kMajorB ? 1 : p.Ldb;
        int ia0 = StagedRowIndex(aBase, row0 + aRc, p.M, kMajorA ? p.Lda : 1);
        int ia1 = StagedRowIndex(aBase, row0 + aRc + 32, p.M, kMajorA ? p.Lda : 1);
        int ib0 = StagedRowIndex(bBase, col0 + bRc, p.N, kMajorB ? p.Ldb : 1);
        int ib1 = StagedRowIndex(bBase, col0 + bRc + 32, p.N, kMajorB ? p.Ldb : 1);

        // The first tile holds K's remainder: k from kFirst ≤ 0, where k < 0 (and k ≥ K, for K < 16) reads as zero.
        int kFirst = p.K % G64BK == 0 ? 0 : p.K % G64BK - G64BK, tiles = (p.K + G64BK - 1) / G64BK;
        int ka = kFirst + aKk, kb = kFirst + bKk;
        int aHalf = 8 * aKUnit, bHalf = 8 * bKUnit;   // index step from k to k + 8
        bool aIn0 = ka >= 0 && ka < p.K, aIn1 = ka + 8 >= 0 && ka + 8 < p.K;
        bool bIn0 = kb >= 0 && kb < p.K, bIn1 = kb + 8 >= 0 && kb + 8 < p.K;
        int oa = ka * aKUnit, ob = kb * bKUnit;
        float pa0 = Fetch(a, aIn0, ia0 + oa), pa1 = Fetch(a, aIn0, ia1 + oa);
        float pa2 = Fetch(a, aIn1, ia0 + oa + aHalf), pa3 = Fetch(a, aIn1, ia1 + oa + aHalf);
        float pb0 = Fetch(b, bIn0, ib0 + ob), pb1 = Fetch(b, bIn0, ib1 + ob);
        float pb2 = Fetch(b, bIn1, ib0 + ob + bHalf), pb3 = Fetch(b, bIn1, ib1 + ob + bHalf);

        // Slots kk·68 + rc (+32 for the second row, +8·68 for k + 8): constant offsets from one address.
        int aSlot = aKk * G64Stride + aRc, bSlot = bKk * G64Stride + bRc;
        var sa = asf.SubView(aSlot);
        var sb = bsf.SubView(bSlot);
        sa[0] = pa0; sa[32] = pa1; sa[8 * G64Stride] = pa2; sa[8 * G64Stride + 32] = pa3;
        sb[0] = pb0; sb[32] = pb1; sb[8 * G64Stride] = pb2; sb[8 * G64Stride + 32] = pb3;
        Group.Barrier();

        var acc = default(Accumulators4x4);
        int cur = 0;
        for (int k = 0; k < tiles; k++)
        {
            // Next tile's global loads first: their latency hides behind this tile's arithmetic. It lies inside K.
            bool next = k + 1 < tiles;
            if (next)
            {
                oa = (ka + (k + 1) * G64BK) * aKUnit;
                ob = (kb + (k + 1) * G64BK) * bKUnit;
                pa0 = a[ia0 + oa]; pa1 = a[ia1 + oa]; pa2 = a[ia0 + oa + aHalf]; pa3 = a[ia1 + oa + aHalf];
                pb0 = b[ib0 + ob]; pb1 = b[ib1 + ob]; pb2 = b[ib0 + ob + bHalf]; pb3 = b[ib1 + ob + bHalf];
            }

            var at = as4.SubView(cur * G64BK * G64Stride4 + ty);
            var bt = bs4.SubView(cur * G64BK * G64Stride4 + tx);
            OuterProduct4x4(ref acc, at[0], bt[0]);
            OuterProduct4x4(ref acc, at[G64Stride4], bt[G64Stride4]);
            OuterProduct4x4(ref acc, at[2 * G64Stride4], bt[2 * G64Stride4]);
            OuterProduct4x4(ref acc, at[3 * G64Stride4], bt[3 * G64Stride4]);
            OuterProduct4x4(ref acc, at[4 * G64Stride4], bt[4 * G64Stride4]);
            OuterProduct4x4(ref acc, at[5 * G64Stride4], bt[5 * G64Stride4]);
            OuterProduct4x4(ref acc, at[6 * G64Stride4], bt[6 * G64Stride4]);
            OuterProduct4x4(ref acc, at[7 * G64Stride4], bt[7 * G64Stride4]);
            OuterProduct4x4(ref acc, at[8 * G64Stride4], bt[8 * G64Stride4]);
            OuterProduct4x4(ref acc, at[9 * G64Stride4], bt[9 * G64Stride4]);
            OuterProduct4x4(ref acc, at[10 * G64Stride4], bt[10 * G64Stride4]);
            OuterProduct4x4(ref acc, at[11 * G64Stride4], bt[11 * G64Stride4]);
            OuterProduct4x4(ref acc, at[12 * G64Stride4], bt[12 * G64Stride4]);
            OuterProduct4x4(ref acc, at[13 * G64Stride4], bt[13 * G64Stride4]);
            OuterProduct4x4(ref acc, at[14 * G64Stride4], bt[14 * G64Stride4]);
            OuterProduct4x4(ref acc, at[15 * G64Stride4], bt[15 * G64Stride4]);

            if (next)
            {
                // The other buffer was last read before the previous iteration's barrier: safe to overwrite.
                sa = asf.SubView((cur ^ 1) * G64Buffer + aSlot);
                sb = bsf.SubView((cur ^ 1) * G64Buffer + bSlot);
                sa[0] = pa0; sa[32] = pa1; sa[8 * G64Stride] = pa2; sa[8 * G64Stride + 32] = pa3;
                sb[0] = pb0; sb[32] = pb1; sb[8 * G64Stride] = pb2; sb[8 * G64Stride + 32] = pb3;
            }

            Group.Barrier();
            cur ^= 1;
        }

        return acc;
    }

    /// <summary>C = alpha·(this thread's block of the tile at (row0, col0)) + beta·C, for C at element offset cBase.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store64(ArrayView<float> c, GemmArgs p, int cBase, int row0, int col0, Accumulators4x4 acc)
    {
        int t = Group.IdxX, lane = t & 31, warp = t >> 5;
        int tx = ((warp & 1) << 3) | (lane & 7), ty = ((warp >> 1) << 2) | (lane >> 3);
        int r0 = row0 + 4 * ty, c0 = col0 + 4 * tx;
        StoreRow4(c, p, cBase, r0, c0, acc.C00, acc.C01, acc.C02, acc.C03);
        StoreRow4(c, p, cBase, r0 + 1, c0, acc.C10, acc.C11, acc.C12, acc.C13);
        StoreRow4(c, p, cBase, r0 + 2, c0, acc.C20, acc.C21, acc.C22, acc.C23);
        StoreRow4(c, p, cBase, r0 + 3, c0, acc.C30, acc.C31, acc.C32, acc.C33);
    }

    /// <summary>One step of k of the 4×4 register block: c[i, j] += a[i]·b[j] (inlined: the accumulators stay registers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void OuterProduct4x4(ref Accumulators4x4 c, Float4x a, Float4x b)
    {
        c.C00 += a.X * b.X; c.C01 += a.X * b.Y; c.C02 += a.X * b.Z; c.C03 += a.X * b.W;
        c.C10 += a.Y * b.X; c.C11 += a.Y * b.Y; c.C12 += a.Y * b.Z; c.C13 += a.Y * b.W;
        c.C20 += a.Z * b.X; c.C21 += a.Z * b.Y; c.C22 += a.Z * b.Z; c.C23 += a.Z * b.W;
        c.C30 += a.W * b.X; c.C31 += a.W * b.Y; c.C32 += a.W * b.Z; c.C33 += a.W * b.W;
    }

    private static void StoreRow4(ArrayView<float> c, GemmArgs p, int cBase, int row, int col,
        float v0, float v1, float v2, float v3)
    {
        if (row >= p.M) return;
        int o = cBase + row * p.Ldc;
        Store(c, p, o, col, v0);
        Store(c, p, o, col + 1, v1);
        Store(c, p, o, col + 2, v2);
        Store(c, p, o, col + 3, v3);
    }
}
