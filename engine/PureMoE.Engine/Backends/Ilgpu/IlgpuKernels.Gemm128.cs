using System.Runtime.CompilerServices;
using ILGPU;

namespace PureMoE.Backends.Ilgpu;

/// <summary>Four floats read as one 16-byte value: ILGPU's PTX backend turns an aligned load of it into ld.v4.f32.</summary>
internal struct Float4x
{
    public float X, Y, Z, W;
}

/// <summary>
/// Up to <see cref="Count"/> separate buffers passed to one kernel launch: a kernel cannot take an array of views, but
/// it can take a struct of them. <see cref="IlgpuKernels.SgemmGrouped128"/> reads each expert's weight (or writes
/// its weight gradient) through this, so the experts' buffers need no copying into one. Public only because ILGPU
/// requires a kernel's parameter types to be.
/// </summary>
public struct GroupOperands
{
    /// <summary>How many views it holds.</summary>
    public const int Count = 16;

#pragma warning disable CS1591 // the views of slots 0 to 15
    public ArrayView<float> G0, G1, G2, G3, G4, G5, G6, G7, G8, G9, G10, G11, G12, G13, G14, G15;
#pragma warning restore CS1591

    /// <summary>View number <paramref name="slot"/> (0 ≤ slot &lt; <see cref="Count"/>).</summary>
    internal readonly ArrayView<float> Get(int slot) => slot switch
    {
        0 => G0, 1 => G1, 2 => G2, 3 => G3, 4 => G4, 5 => G5, 6 => G6, 7 => G7,
        8 => G8, 9 => G9, 10 => G10, 11 => G11, 12 => G12, 13 => G13, 14 => G14, _ => G15,
    };

    /// <summary>
    /// The views, in slots 0, 1, …; the slots past them repeat the first (a launch maps every field to a device
    /// pointer, so none may be left empty).
    /// </summary>
    internal static GroupOperands Of(IReadOnlyList<ArrayView<float>> views)
    {
        if (views.Count is 0 or > Count) throw new ArgumentOutOfRangeException(nameof(views), views.Count, $"1 to {Count} views");
        ArrayView<float> V(int i) => views[i < views.Count ? i : 0];
        return new GroupOperands
        {
            G0 = V(0), G1 = V(1), G2 = V(2), G3 = V(3), G4 = V(4), G5 = V(5), G6 = V(6), G7 = V(7),
            G8 = V(8), G9 = V(9), G10 = V(10), G11 = V(11), G12 = V(12), G13 = V(13), G14 = V(14), G15 = V(15),
        };
    }
}

/// <summary>One tile of a grouped GEMM as its table entry describes it: the B and C views, where the tile starts, and its GEMM's offsets.</summary>
internal struct GroupedTile
{
    public ArrayView<float> B, C;
    public int Row0, Col0, ABase, BBase, CBase;
}

/// <summary>The 8×8 register block of a <see cref="IlgpuKernels.Sgemm128"/> thread: C{row}{column}.</summary>
internal struct Accumulators8x8
{
    public float C00, C01, C02, C03, C04, C05, C06, C07;
    public float C10, C11, C12, C13, C14, C15, C16, C17;
    public float C20, C21, C22, C23, C24, C25, C26, C27;
    public float C30, C31, C32, C33, C34, C35, C36, C37;
    public float C40, C41, C42, C43, C44, C45, C46, C47;
    public float C50, C51, C52, C53, C54, C55, C56, C57;
    public float C60, C61, C62, C63, C64, C65, C66, C67;
    public float C70, C71, C72, C73, C74, C75, C76, C77;
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
// per tile. Global loads are scalar and coalesced along the operand's contiguous axis.
//
// On Hopper an SM sub-partition issues one instruction per cycle and one FFMA per cycle keeps its 32 FP32 lanes
// busy, so every instruction that is not an FFMA costs a multiply-add slot: the K loop is written to issue as few
// as possible. (1) The 8 steps of k are written out (ILGPU 1.5.3 does not unroll this loop) and read shared memory
// through views that start at the thread's own vectors, so each LDS carries its offset as a constant. (2) Each
// thread stages 4 elements 32 rows (or columns) apart at one k for both operands, whatever their layout, so the 4
// shared-memory stores are also constant offsets from one address. (3) No bounds test inside the loop: rows of A
// past M and columns of B past N are read from the last row or column instead (their products land only in rows and
// columns of C that are never stored), and K's remainder is taken first, in the tile the prologue stages with
// guarded loads (k < 0 reads as zero), so every tile the loop fetches lies inside K. Any M, N, K (0 included),
// transposition, leading dimension and batch stride works. The 64 accumulators are the fields of a local struct
// (ILGPU keeps them in registers; an array would live in local memory). Tiles are visited in groups of 8 tile rows
// so that blocks running together share A and B in L2. SgemmGrouped128 runs the same tile code over many GEMMs at
// once (grouped GEMM, MoE experts): each group reads its tile's GEMM (M, K, offsets) from a small table the host
// builds, so one launch covers every expert.
internal static partial class IlgpuKernels
{
    /// <summary>Threads per group of <see cref="Sgemm128"/>.</summary>
    public const int Gemm128Threads = 256;

    /// <summary>Tile size of <see cref="Sgemm128"/> along M and N.</summary>
    public const int Gemm128Tile = 128;

    /// <summary>Shared memory of a <see cref="Sgemm128"/> group: two buffers of a 128×8 tile of each operand (16.9 KB).</summary>
    public const int Gemm128SharedBytes = 2 * 2 * G128BK * G128Stride * sizeof(float);

    private const int G128BK = 8;
    private const int G128Stride = 132;             // floats per k row of a staged tile (128 + 4 padding)
    private const int G128Stride4 = G128Stride / 4; // the same in Float4x
    private const int G128Buffer = G128BK * G128Stride;

    [IlgpuKernel]
    public static void Sgemm128(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmArgs p)
    {
        var as4 = SharedMemory.Allocate<Float4x>(2 * G128BK * G128Stride4);
        var bs4 = SharedMemory.Allocate<Float4x>(2 * G128BK * G128Stride4);

        int batch = Grid.IdxY;
        var origin = GroupedTileOrigin(Grid.IdxX, p.M, p.TilesN, Gemm128Tile);
        int aBase = p.OffA + batch * p.StrideA, bBase = p.OffB + batch * p.StrideB, cBase = p.OffC + batch * p.StrideC;
        Tile128(a, b, c, p, as4, bs4, origin.X, origin.Y, aBase, bBase, cBase);
    }

    /// <summary>
    /// The first row (X) and column (Y) of C of tile number <paramref name="tile"/>, in grouped order: 8 tile rows at a
    /// time, column by column within the group, so that the groups running together share rows of A and columns of B
    /// in L2 (both tiled SGEMM kernels).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Index2D GroupedTileOrigin(int tile, int m, int tilesN, int tileSize)
    {
        int tilesM = (m + tileSize - 1) / tileSize;
        int perGroup = 8 * tilesN, firstM = tile / perGroup * 8, inGroup = tile % perGroup;
        int groupRows = Math.Min(tilesM - firstM, 8);
        return new Index2D((firstM + inGroup % groupRows) * tileSize, inGroup / groupRows * tileSize);
    }

    /// <summary>
    /// Ints per tile in the table of <see cref="SgemmGrouped128"/>: M, K, row0, col0, aBase, bBase, cBase, bSlot,
    /// cSlot (a slot ≥ 0 takes that operand from <see cref="GroupOperands"/>, −1 from the shared view).
    /// </summary>
    public const int GroupedTileInts = 9;

    /// <summary>
    /// Many independent GEMMs (the groups of a grouped GEMM) in one launch of the 128×128 tile code: group
    /// Grid.IdxX computes the tile described by its entry of <paramref name="tiles"/> (see <see cref="GroupedTileInts"/>):
    /// the tile's own M and K (its GEMM's), its first row and column, its GEMM's element offsets in a, b and c, and
    /// where its B and C are: each expert's own buffer among <paramref name="operands"/> (its weight, or its weight
    /// gradient), or the shared <paramref name="b"/> / <paramref name="c"/>. The view is chosen once per tile, before
    /// the K loop. N, leading dimensions, transpositions and scales are shared (in <paramref name="p"/>).
    /// </summary>
    [IlgpuKernel]
    public static void SgemmGrouped128(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GroupOperands operands,
        ArrayView<int> tiles, GemmArgs p)
    {
        var as4 = SharedMemory.Allocate<Float4x>(2 * G128BK * G128Stride4);
        var bs4 = SharedMemory.Allocate<Float4x>(2 * G128BK * G128Stride4);
        var t = ReadGroupedTile(tiles, operands, b, c, ref p);
        Tile128(a, t.B, t.C, p, as4, bs4, t.Row0, t.Col0, t.ABase, t.BBase, t.CBase);
    }

    /// <summary>
    /// This group's tile of a grouped GEMM, from its entry of <paramref name="tiles"/>: its GEMM's M and K go into
    /// <paramref name="p"/>; its B and C views are chosen here, once, before the K loop (both grouped kernels).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static GroupedTile ReadGroupedTile(ArrayView<int> tiles, GroupOperands operands, ArrayView<float> b, ArrayView<float> c, ref GemmArgs p)
    {
        int e = Grid.IdxX * GroupedTileInts;
        p.M = tiles[e];
        p.K = tiles[e + 1];
        int bSlot = tiles[e + 7], cSlot = tiles[e + 8];
        return new GroupedTile
        {
            B = bSlot < 0 ? b : operands.Get(bSlot),
            C = cSlot < 0 ? c : operands.Get(cSlot),
            Row0 = tiles[e + 2], Col0 = tiles[e + 3], ABase = tiles[e + 4], BBase = tiles[e + 5], CBase = tiles[e + 6],
        };
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

        // This thread's 4 elements of each 128×8 staged tile: rows (of A; columns of B) rc + 32·i, i = 0..3, at one
        // k. An operand contiguous along k (A untransposed, B transposed) gives 8 neighbouring threads one row's 8
        // consecutive k; the other layout gives a warp 32 consecutive rows at one k. Either way the 4 shared-memory
        // slots are kk·132 + rc + 32·i, and both transposing stores are free of bank conflicts.
        bool kMajorA = p.TransA == 0, kMajorB = p.TransB != 0;
        int aRc = kMajorA ? t >> 3 : t & 31, aKk = kMajorA ? t & 7 : t >> 5;
        int bRc = kMajorB ? t >> 3 : t & 31, bKk = kMajorB ? t & 7 : t >> 5;

        // Each element's global index without its k part (row clamped into the matrix: see above), and the index
        // step per unit of k. A fetch in the loop is then one add and one load.
        int aKUnit = kMajorA ? 1 : p.Lda, bKUnit = kMajorB ? 1 : p.Ldb;
        int ia0 = StagedRowIndex(aBase, row0 + aRc, p.M, kMajorA ? p.Lda : 1);
        int ia1 = StagedRowIndex(aBase, row0 + aRc + 32, p.M, kMajorA ? p.Lda : 1);
        int ia2 = StagedRowIndex(aBase, row0 + aRc + 64, p.M, kMajorA ? p.Lda : 1);
        int ia3 = StagedRowIndex(aBase, row0 + aRc + 96, p.M, kMajorA ? p.Lda : 1);
        int ib0 = StagedRowIndex(bBase, col0 + bRc, p.N, kMajorB ? p.Ldb : 1);
        int ib1 = StagedRowIndex(bBase, col0 + bRc + 32, p.N, kMajorB ? p.Ldb : 1);
        int ib2 = StagedRowIndex(bBase, col0 + bRc + 64, p.N, kMajorB ? p.Ldb : 1);
        int ib3 = StagedRowIndex(bBase, col0 + bRc + 96, p.N, kMajorB ? p.Ldb : 1);

        // The first tile holds K's remainder: k from kFirst ≤ 0, where k < 0 (and k ≥ K, for K < 8) reads as zero.
        int kFirst = p.K % G128BK == 0 ? 0 : p.K % G128BK - G128BK, tiles = (p.K + G128BK - 1) / G128BK;
        int ka = kFirst + aKk, kb = kFirst + bKk;
        bool aIn = ka >= 0 && ka < p.K, bIn = kb >= 0 && kb < p.K;
        int oa = ka * aKUnit, ob = kb * bKUnit;
        float pa0 = Fetch(a, aIn, ia0 + oa), pa1 = Fetch(a, aIn, ia1 + oa), pa2 = Fetch(a, aIn, ia2 + oa), pa3 = Fetch(a, aIn, ia3 + oa);
        float pb0 = Fetch(b, bIn, ib0 + ob), pb1 = Fetch(b, bIn, ib1 + ob), pb2 = Fetch(b, bIn, ib2 + ob), pb3 = Fetch(b, bIn, ib3 + ob);

        // Where this thread's staged elements go: its first slot in a buffer (the others are +32, +64, +96).
        int aSlot = aKk * G128Stride + aRc, bSlot = bKk * G128Stride + bRc;
        var sa = asf.SubView(aSlot);
        var sb = bsf.SubView(bSlot);
        sa[0] = pa0; sa[32] = pa1; sa[64] = pa2; sa[96] = pa3;
        sb[0] = pb0; sb[32] = pb1; sb[64] = pb2; sb[96] = pb3;
        Group.Barrier();

        var acc = default(Accumulators8x8);
        int cur = 0;
        for (int tile = 0; tile < tiles; tile++)
        {
            // Next tile's global loads first: their latency hides behind this tile's arithmetic. It lies inside K.
            bool next = tile + 1 < tiles;
            if (next)
            {
                oa = (ka + (tile + 1) * G128BK) * aKUnit;
                ob = (kb + (tile + 1) * G128BK) * bKUnit;
                pa0 = a[ia0 + oa]; pa1 = a[ia1 + oa]; pa2 = a[ia2 + oa]; pa3 = a[ia3 + oa];
                pb0 = b[ib0 + ob]; pb1 = b[ib1 + ob]; pb2 = b[ib2 + ob]; pb3 = b[ib3 + ob];
            }

            // The 8 steps of k, reading this tile's rows of A and B through views that start at this thread's
            // vectors: every read is at a constant offset, which ptxas folds into the load instruction.
            var at = as4.SubView(cur * G128BK * G128Stride4 + ty);
            var bt = bs4.SubView(cur * G128BK * G128Stride4 + tx);
            OuterProduct8x8(ref acc, at[0], at[16], bt[0], bt[16]);
            OuterProduct8x8(ref acc, at[G128Stride4], at[G128Stride4 + 16], bt[G128Stride4], bt[G128Stride4 + 16]);
            OuterProduct8x8(ref acc, at[2 * G128Stride4], at[2 * G128Stride4 + 16], bt[2 * G128Stride4], bt[2 * G128Stride4 + 16]);
            OuterProduct8x8(ref acc, at[3 * G128Stride4], at[3 * G128Stride4 + 16], bt[3 * G128Stride4], bt[3 * G128Stride4 + 16]);
            OuterProduct8x8(ref acc, at[4 * G128Stride4], at[4 * G128Stride4 + 16], bt[4 * G128Stride4], bt[4 * G128Stride4 + 16]);
            OuterProduct8x8(ref acc, at[5 * G128Stride4], at[5 * G128Stride4 + 16], bt[5 * G128Stride4], bt[5 * G128Stride4 + 16]);
            OuterProduct8x8(ref acc, at[6 * G128Stride4], at[6 * G128Stride4 + 16], bt[6 * G128Stride4], bt[6 * G128Stride4 + 16]);
            OuterProduct8x8(ref acc, at[7 * G128Stride4], at[7 * G128Stride4 + 16], bt[7 * G128Stride4], bt[7 * G128Stride4 + 16]);

            if (next)
            {
                // The other buffer was last read before the previous iteration's barrier: safe to overwrite.
                sa = asf.SubView((cur ^ 1) * G128Buffer + aSlot);
                sb = bsf.SubView((cur ^ 1) * G128Buffer + bSlot);
                sa[0] = pa0; sa[32] = pa1; sa[64] = pa2; sa[96] = pa3;
                sb[0] = pb0; sb[32] = pb1; sb[64] = pb2; sb[96] = pb3;
            }

            Group.Barrier();
            cur ^= 1;
        }

        int r0 = row0 + 4 * ty, r1 = r0 + 64, cA = col0 + 4 * tx, cB = cA + 64;
        StoreRow8(c, p, cBase, r0, cA, cB, acc.C00, acc.C01, acc.C02, acc.C03, acc.C04, acc.C05, acc.C06, acc.C07);
        StoreRow8(c, p, cBase, r0 + 1, cA, cB, acc.C10, acc.C11, acc.C12, acc.C13, acc.C14, acc.C15, acc.C16, acc.C17);
        StoreRow8(c, p, cBase, r0 + 2, cA, cB, acc.C20, acc.C21, acc.C22, acc.C23, acc.C24, acc.C25, acc.C26, acc.C27);
        StoreRow8(c, p, cBase, r0 + 3, cA, cB, acc.C30, acc.C31, acc.C32, acc.C33, acc.C34, acc.C35, acc.C36, acc.C37);
        StoreRow8(c, p, cBase, r1, cA, cB, acc.C40, acc.C41, acc.C42, acc.C43, acc.C44, acc.C45, acc.C46, acc.C47);
        StoreRow8(c, p, cBase, r1 + 1, cA, cB, acc.C50, acc.C51, acc.C52, acc.C53, acc.C54, acc.C55, acc.C56, acc.C57);
        StoreRow8(c, p, cBase, r1 + 2, cA, cB, acc.C60, acc.C61, acc.C62, acc.C63, acc.C64, acc.C65, acc.C66, acc.C67);
        StoreRow8(c, p, cBase, r1 + 3, cA, cB, acc.C70, acc.C71, acc.C72, acc.C73, acc.C74, acc.C75, acc.C76, acc.C77);
    }

    /// <summary>
    /// Index of a staged row's (or column's) element at k = 0: the row is clamped to the last one, so a tile that
    /// overhangs the matrix reads real memory; its products land only where nothing is stored.
    /// </summary>
    private static int StagedRowIndex(int matrixBase, int row, int rows, int rowUnit) =>
        matrixBase + Math.Min(row, rows - 1) * rowUnit;

    /// <summary>
    /// One step of k of the 8×8 register block: c[i, j] += a[i]·b[j], rows a0 (i = 0..3) and a1 (4..7), columns b0
    /// (j = 0..3) and b1 (4..7). Inlined into the kernel, so the accumulators stay registers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void OuterProduct8x8(ref Accumulators8x8 c, Float4x a0, Float4x a1, Float4x b0, Float4x b1)
    {
        c.C00 += a0.X * b0.X; c.C01 += a0.X * b0.Y; c.C02 += a0.X * b0.Z; c.C03 += a0.X * b0.W;
        c.C04 += a0.X * b1.X; c.C05 += a0.X * b1.Y; c.C06 += a0.X * b1.Z; c.C07 += a0.X * b1.W;
        c.C10 += a0.Y * b0.X; c.C11 += a0.Y * b0.Y; c.C12 += a0.Y * b0.Z; c.C13 += a0.Y * b0.W;
        c.C14 += a0.Y * b1.X; c.C15 += a0.Y * b1.Y; c.C16 += a0.Y * b1.Z; c.C17 += a0.Y * b1.W;
        c.C20 += a0.Z * b0.X; c.C21 += a0.Z * b0.Y; c.C22 += a0.Z * b0.Z; c.C23 += a0.Z * b0.W;
        c.C24 += a0.Z * b1.X; c.C25 += a0.Z * b1.Y; c.C26 += a0.Z * b1.Z; c.C27 += a0.Z * b1.W;
        c.C30 += a0.W * b0.X; c.C31 += a0.W * b0.Y; c.C32 += a0.W * b0.Z; c.C33 += a0.W * b0.W;
        c.C34 += a0.W * b1.X; c.C35 += a0.W * b1.Y; c.C36 += a0.W * b1.Z; c.C37 += a0.W * b1.W;
        c.C40 += a1.X * b0.X; c.C41 += a1.X * b0.Y; c.C42 += a1.X * b0.Z; c.C43 += a1.X * b0.W;
        c.C44 += a1.X * b1.X; c.C45 += a1.X * b1.Y; c.C46 += a1.X * b1.Z; c.C47 += a1.X * b1.W;
        c.C50 += a1.Y * b0.X; c.C51 += a1.Y * b0.Y; c.C52 += a1.Y * b0.Z; c.C53 += a1.Y * b0.W;
        c.C54 += a1.Y * b1.X; c.C55 += a1.Y * b1.Y; c.C56 += a1.Y * b1.Z; c.C57 += a1.Y * b1.W;
        c.C60 += a1.Z * b0.X; c.C61 += a1.Z * b0.Y; c.C62 += a1.Z * b0.Z; c.C63 += a1.Z * b0.W;
        c.C64 += a1.Z * b1.X; c.C65 += a1.Z * b1.Y; c.C66 += a1.Z * b1.Z; c.C67 += a1.Z * b1.W;
        c.C70 += a1.W * b0.X; c.C71 += a1.W * b0.Y; c.C72 += a1.W * b0.Z; c.C73 += a1.W * b0.W;
        c.C74 += a1.W * b1.X; c.C75 += a1.W * b1.Y; c.C76 += a1.W * b1.Z; c.C77 += a1.W * b1.W;
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
