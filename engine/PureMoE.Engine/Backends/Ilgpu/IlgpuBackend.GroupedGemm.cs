using ILGPU;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>How <see cref="IlgpuBackend"/> runs grouped GEMMs (a tuning and testing knob; Auto chooses by shape).</summary>
internal enum GroupedGemmChoice
{
    /// <summary>By shape: one grouped launch, of 128×128 or 64×64 tiles (see <see cref="IlgpuBackend.GroupedGemmTile"/>).</summary>
    Auto,
    /// <summary>One launch of <see cref="IlgpuKernels.SgemmGrouped128"/> wherever the accelerator allows the 128×128 kernel.</summary>
    Grouped,
    /// <summary>One launch of <see cref="IlgpuKernels.SgemmGrouped64"/> wherever the accelerator allows it.</summary>
    Grouped64,
    /// <summary>One <see cref="IlgpuBackend.Gemm"/> per group (the interface's default).</summary>
    PerGroup,
}

// Grouped GEMM in one launch. A kernel cannot take an array of buffers, but it can take a struct of up to 16 views
// (GroupOperands): each expert's weight (row-grouped forms) or weight gradient (K-grouped form) is passed where it
// lies. The host lists every tile of every group's GEMM in a small int table (the tile's M, K, first row and column,
// its GEMM's offsets in A, B and C, and which view holds its B or C) and one launch computes them all: of
// SgemmGrouped128 (Sgemm128's tile code) when its 128×128 tiles give every multiprocessor one, else of
// SgemmGrouped64 (Sgemm64's, 4× the tiles). Launching one GEMM per group instead would queue the groups one after
// another on the stream, each with a launch's fixed cost and, at a small model's sizes, too few tiles to fill the
// device. With more than 16 groups the per-group matrices are first
// copied device-to-device into one pooled buffer (and the K-grouped outputs copied back from one). Each output
// element is computed by one thread in a fixed order, so results are deterministic. Empty groups get no tiles
// (row-grouped) or tiles with K = 0 (K-grouped: C = beta·C).
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, GroupOperands, ArrayView<int>, GemmArgs>? _sgemmGrouped;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, GroupOperands, ArrayView<int>, GemmArgs>? _sgemmGrouped64;
    private long _groupedGemmLaunches;

    /// <summary>Grouped GEMM override for benchmarks and tests (Auto by default).</summary>
    internal GroupedGemmChoice GroupedGemmMode { get; set; }

    /// <summary>Launches of the grouped kernel so far (tests check that the grouped path ran).</summary>
    internal long GroupedGemmLaunches => Interlocked.Read(ref _groupedGemmLaunches);

    /// <summary>
    /// The tile side of the one launch a grouped GEMM runs as (128 or 64), or 0 for one GEMM per group. Auto launches
    /// once when the 256-thread kernels are supported and not overridden (GemmKernel = Tiled keeps the per-group
    /// loop) and at least two groups have work (one GEMM needs no table: the plain Gemm picks its kernel). It takes
    /// 128×128 tiles when all groups' <paramref name="tiles128"/> give every multiprocessor one and the output sides
    /// every group shares span a tile (<paramref name="sharedSide"/> ≥ 128: narrower ones would be mostly padding),
    /// and 64×64 tiles otherwise.
    /// </summary>
    internal int GroupedGemmTile(int groupsWithWork, long tiles128, int sharedSide) => GroupedGemmMode switch
    {
        _ when !SupportsLargeGemm => 0,
        GroupedGemmChoice.PerGroup => 0,
        GroupedGemmChoice.Grouped => IlgpuKernels.Gemm128Tile,
        GroupedGemmChoice.Grouped64 => IlgpuKernels.Gemm64Tile,
        _ when GemmKernel == GemmKernelChoice.Tiled || groupsWithWork < 2 => 0,
        _ => tiles128 >= Accelerator.NumMultiprocessors && sharedSide >= IlgpuKernels.Gemm128Tile
            ? IlgpuKernels.Gemm128Tile
            : IlgpuKernels.Gemm64Tile,
    };

    /// <summary>
    /// Whether <paramref name="groups"/> matrices of <paramref name="perGroup"/> elements can go to one launch: up to
    /// <see cref="GroupOperands.Count"/> are read where they are; more are staged side by side in one buffer, which
    /// cannot pass 2³¹ elements (e.g. 64 experts of 4096 × 14336). Otherwise the grouped GEMM runs one GEMM per group.
    /// </summary>
    internal static bool CanStage(int groups, long perGroup) => groups <= GroupOperands.Count || groups * perGroup <= int.MaxValue;

    /// <inheritdoc />
    public void GroupedGemm(int[] groupSizes, int n, int k, double alpha, Storage a, Storage[] b, bool transB, double beta, Storage c)
    {
        const string op = "GroupedGemm";
        GroupedGemmLoops.Check(groupSizes, b.Length);
        int used = 0, tilesN = TileCount(n, IlgpuKernels.Gemm128Tile);
        long tiles128 = 0;
        foreach (int s in groupSizes)
        {
            if (s == 0) continue;
            used++;
            tiles128 += (long)TileCount(s, IlgpuKernels.Gemm128Tile) * tilesN;
        }
        if (n == 0 || used == 0) return;
        int tile = GroupedGemmTile(used, tiles128, n);
        if (tile == 0 || !CanStage(used, (long)n * k))
        {
            GroupedGemmLoops.Rows(this, groupSizes, n, k, alpha, a, b, transB, beta, c);
            return;
        }

        // Up to GroupOperands.Count groups read their own B where it is; more are first staged side by side.
        int perB = n * k;
        bool direct = used <= GroupOperands.Count;
        using var stagedB = direct ? null : Rent(DType.Float32, used * perB, op);
        var views = new List<ArrayView<float>>();
        var table = new int[TileCount(groupSizes, n, tile) * IlgpuKernels.GroupedTileInts];
        int at = 0, slot = 0, row = 0;
        for (int g = 0; g < groupSizes.Length; row += groupSizes[g], g++)
        {
            int m = groupSizes[g];
            if (m == 0) continue;
            if (b[g].Length < perB) throw new ArgumentException($"{op}: group {g}'s matrix has {b[g].Length} elements, needs {n}·{k}");
            if (direct)
            {
                views.Add(F(b[g], op));
                AddTiles(table, ref at, tile, m, n, k, row * k, 0, row * n, bSlot: slot, cSlot: -1);
            }
            else
            {
                if (perB > 0) CopyOnDevice(F(b[g], op).SubView(0, perB), stagedB!.F.SubView(slot * perB, perB));
                AddTiles(table, ref at, tile, m, n, k, row * k, slot * perB, row * n, bSlot: -1, cSlot: -1);
            }
            slot++;
        }
        var p = new GemmArgs
        {
            N = n, Lda = k, Ldb = transB ? k : n, Ldc = n, TransB = transB ? 1 : 0,
            Alpha = (float)alpha, Beta = (float)beta,
        };
        var shared = direct ? views[0] : stagedB!.F;
        LaunchGrouped(tile, table, F(a, op), shared, F(c, op), GroupOperands.Of(direct ? views : [shared]), p);
    }

    /// <inheritdoc />
    public void GroupedGemmKGrouped(int[] groupSizes, int m, int n, double alpha, Storage a, Storage b, double beta, Storage?[] c)
    {
        const string op = "GroupedGemmKGrouped";
        GroupedGemmLoops.Check(groupSizes, c.Length);
        int outputs = c.Count(x => x is not null);
        if (m == 0 || n == 0 || outputs == 0) return;
        int tile = GroupedGemmTile(outputs, TilesPerOutput(m, n, IlgpuKernels.Gemm128Tile) * outputs, Math.Min(m, n));
        if (tile == 0 || !CanStage(outputs, (long)m * n))
        {
            GroupedGemmLoops.KGrouped(this, groupSizes, m, n, alpha, a, b, beta, c);
            return;
        }

        // Longest reductions first: tiles of unequal K then finish closer together. Ties keep group order.
        int[] rowStart = new int[groupSizes.Length];
        for (int g = 1; g < groupSizes.Length; g++) rowStart[g] = rowStart[g - 1] + groupSizes[g - 1];
        int[] order = Enumerable.Range(0, groupSizes.Length).Where(g => c[g] is not null)
            .OrderByDescending(g => groupSizes[g]).ThenBy(g => g).ToArray();

        // Up to GroupOperands.Count outputs are written where they are; more go through a staged [outputs, M, N].
        int perC = m * n;
        bool direct = outputs <= GroupOperands.Count;
        using var stagedC = direct ? null : Rent(DType.Float32, outputs * perC, op);
        var views = new List<ArrayView<float>>();
        var table = new int[TilesPerOutput(m, n, tile) * outputs * IlgpuKernels.GroupedTileInts];
        int at = 0;
        for (int slot = 0; slot < order.Length; slot++)
        {
            int g = order[slot];
            if (c[g]!.Length < perC) throw new ArgumentException($"{op}: group {g}'s output has {c[g]!.Length} elements, needs {m}·{n}");
            if (direct)
            {
                views.Add(F(c[g]!, op));
                AddTiles(table, ref at, tile, m, n, groupSizes[g], rowStart[g] * m, rowStart[g] * n, 0, bSlot: -1, cSlot: slot);
            }
            else
            {
                // beta ≠ 0 reads C: bring the group's current output into its slot first.
                if (beta != 0) CopyOnDevice(F(c[g]!, op).SubView(0, perC), stagedC!.F.SubView(slot * perC, perC));
                AddTiles(table, ref at, tile, m, n, groupSizes[g], rowStart[g] * m, rowStart[g] * n, slot * perC, bSlot: -1, cSlot: -1);
            }
        }
        var p = new GemmArgs
        {
            N = n, Lda = m, Ldb = n, Ldc = n, TransA = 1,
            Alpha = (float)alpha, Beta = (float)beta,
        };
        var shared = direct ? views[0] : stagedC!.F;
        LaunchGrouped(tile, table, F(a, op), F(b, op), shared, GroupOperands.Of(direct ? views : [shared]), p);
        if (direct) return;
        for (int slot = 0; slot < order.Length; slot++)
            CopyOnDevice(stagedC!.F.SubView(slot * perC, perC), F(c[order[slot]]!, op).SubView(0, perC));
    }

    /// <summary>A device-to-device copy queued on the default stream (counted in <see cref="Launches"/>).</summary>
    private void CopyOnDevice(ArrayView<float> from, ArrayView<float> to)
    {
        from.CopyTo(Accelerator.DefaultStream, to);
        _launches.Add("device copy");
    }

    /// <summary>Tiles of side <paramref name="tile"/> along an extent.</summary>
    private static int TileCount(int extent, int tile) => (extent + tile - 1) / tile;

    /// <summary>Tiles of the row-grouped form: each group's rows by the shared n.</summary>
    private static long TileCount(int[] groupSizes, int n, int tile) =>
        groupSizes.Sum(s => (long)TileCount(s, tile)) * TileCount(n, tile);

    /// <summary>Tiles of one m×n output of the K-grouped form.</summary>
    private static long TilesPerOutput(int m, int n, int tile) => (long)TileCount(m, tile) * TileCount(n, tile);

    /// <summary>
    /// Appends the tiles of one m×n×k GEMM to the table, in the order Sgemm128 and Sgemm64 visit them (8 tile rows at
    /// a time, column by column) so that groups running together share operands in L2.
    /// </summary>
    private static void AddTiles(int[] table, ref int at, int tile, int m, int n, int k, int aBase, int bBase, int cBase, int bSlot, int cSlot)
    {
        int tilesM = TileCount(m, tile), tilesN = TileCount(n, tile);
        for (int first = 0; first < tilesM; first += 8)
        {
            int rows = Math.Min(tilesM - first, 8);
            for (int col = 0; col < tilesN; col++)
                for (int r = 0; r < rows; r++)
                {
                    table[at++] = m;
                    table[at++] = k;
                    table[at++] = (first + r) * tile;
                    table[at++] = col * tile;
                    table[at++] = aBase;
                    table[at++] = bBase;
                    table[at++] = cBase;
                    table[at++] = bSlot;
                    table[at++] = cSlot;
                }
        }
    }

    /// <summary>Uploads the tile table and launches one group of 256 threads per tile, of side <paramref name="tile"/>.</summary>
    private void LaunchGrouped(int tile, int[] table, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GroupOperands operands, GemmArgs p)
    {
        int tiles = table.Length / IlgpuKernels.GroupedTileInts;
        var (buffer, view) = UploadTable(table);
        try
        {
            var kernel = tile == IlgpuKernels.Gemm128Tile
                ? Cached(ref _sgemmGrouped, () =>
                    Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GroupOperands, ArrayView<int>, GemmArgs>(
                        IlgpuKernels.SgemmGrouped128))
                : Cached(ref _sgemmGrouped64, () =>
                    Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GroupOperands, ArrayView<int>, GemmArgs>(
                        IlgpuKernels.SgemmGrouped64));
            int threads = tile == IlgpuKernels.Gemm128Tile ? IlgpuKernels.Gemm128Threads : IlgpuKernels.Gemm64Threads;
            kernel(new KernelConfig(new Index1D(tiles), new Index1D(threads)), a, b, c, operands, view, p);
            Interlocked.Increment(ref _groupedGemmLaunches);
        }
        finally
        {
            // Safe without waiting: whatever rents the buffer next runs after this kernel on the same stream.
            Pool.Return(buffer);
        }
    }
}
