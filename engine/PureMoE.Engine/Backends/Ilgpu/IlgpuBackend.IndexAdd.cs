using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.RadixSortOperations;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

// IndexAdd by sorting (CSR): dst[o, idx[j], i] += src[o, j, i] for j in increasing order, as the reference loop.
//  1. IndexAddKeys: key[j] = idx[j] as int32 (axisLen for an index outside [0, axisLen): it sorts after every row,
//     so no row's segment holds it and it adds nothing), value[j] = j.
//  2. ILGPU.Algorithms' radix sort on the (key, value) pairs. An LSD radix sort is stable, so each row's j's stay
//     in increasing order: the segment of row r lists exactly the j's with idx[j] == r, smallest first.
//  3. IndexAddRowStarts: start[r] = first position whose key is ≥ r (binary search), r in [0, axisLen].
//  4. IndexAddSorted*: one thread per destination element (o, row, i) adds src[o, j, i] for the j's of its segment
//     in order. The same additions in the same order as the reference, so float32 results are bit-identical,
//     and no atomics, so they do not depend on scheduling.
// O(count·inner) work per outer slice plus one sort of count keys per call (shared by all outer slices), against
// O(axisLen·inner·count) for the direct kernel. Keys only need ⌈log₂(axisLen + 1)⌉ bits: below 2¹⁶ rows the sort
// looks at 16 bits, half the passes of a full 32-bit sort. Small problems keep the direct kernel (one launch).
internal static partial class IlgpuKernels
{
    /// <summary>Sort keys of IndexAdd: key[j] = idx[j], or AxisLen when out of range; value[j] = j.</summary>
    [IlgpuKernel]
    public static void IndexAddKeys(Index1D j, ArrayView<long> idx, ArrayView<int> keys, ArrayView<int> values, IndexArgs p)
    {
        long row = idx[j];
        keys[j] = (ulong)row < (ulong)p.AxisLen ? (int)row : p.AxisLen;
        values[j] = j;
    }

    /// <summary>starts[r] = the first position s with sortedKeys[s] ≥ r (Count if none): row r's segment is [starts[r], starts[r + 1]).</summary>
    [IlgpuKernel]
    public static void IndexAddRowStarts(Index1D r, ArrayView<int> sortedKeys, ArrayView<int> starts, IndexArgs p)
    {
        int lo = 0, hi = p.Count;
        while (lo < hi)
        {
            int mid = lo + (hi - lo) / 2;
            if (sortedKeys[mid] < r) lo = mid + 1;
            else hi = mid;
        }
        starts[r] = lo;
    }

    /// <summary>One thread per dst element: adds the src rows of its row's segment (increasing j) to it.</summary>
    [IlgpuKernel]
    public static void IndexAddSortedFloat(Index1D e, ArrayView<float> dst, ArrayView<int> order, ArrayView<int> starts,
        ArrayView<float> src, IndexArgs p)
    {
        int i = e % p.Inner, t = e / p.Inner, row = t % p.AxisLen, o = t / p.AxisLen;
        float acc = dst[e];
        int end = starts[row + 1];
        for (int s = starts[row]; s < end; s++) acc += src[(o * p.Count + order[s]) * p.Inner + i];
        dst[e] = acc;
    }

    /// <summary>The int64 variant of <see cref="IndexAddSortedFloat"/>.</summary>
    [IlgpuKernel]
    public static void IndexAddSortedLong(Index1D e, ArrayView<long> dst, ArrayView<int> order, ArrayView<int> starts,
        ArrayView<long> src, IndexArgs p)
    {
        int i = e % p.Inner, t = e / p.Inner, row = t % p.AxisLen, o = t / p.AxisLen;
        long acc = dst[e];
        int end = starts[row + 1];
        for (int s = starts[row]; s < end; s++) acc += src[(o * p.Count + order[s]) * p.Inner + i];
        dst[e] = acc;
    }
}

/// <summary>Radix-sort order of IndexAdd's row keys (non-negative, below 2¹⁶): the low 16 bits, ascending.</summary>
internal readonly struct RowKey16 : IRadixSortOperation<int>
{
    /// <inheritdoc />
    public int NumBits => 16;

    /// <inheritdoc />
    public int DefaultValue => 0;

    /// <inheritdoc />
    public int ExtractRadixBits(int value, int shift, int bitMask) => (value >> shift) & bitMask;
}

public sealed partial class IlgpuBackend
{
    /// <summary>
    /// Forces IndexAdd's path: true the direct scan, false the sort, null (default) the choice of
    /// <see cref="UsesDirectIndexAdd"/>. Both give the same bits; benchmarks and tests set it to time or test either.
    /// </summary>
    internal bool? ForceDirectIndexAdd { get; set; }

    /// <summary>
    /// The direct scan when it is short per thread (count ≤ 32) or small in all (count ≤ 1024 and
    /// outer·axisLen·inner·count ≤ 2²⁷ index reads): there its one launch beats the sort's few dozen small launches
    /// (four per 2-bit radix pass, plus the pair packing and the row starts). Measured on an H200 (bench/RESULTS.md),
    /// 4096 rows × 1024: the sorted path about 0.2 ms whatever the count, the direct scan 0.095 ms at count 32 and
    /// 0.29 ms at 128 (about 1.4·10¹² index reads a second), so they cross near 2²⁸ reads; 2²⁷ keeps a margin.
    /// </summary>
    internal bool UsesDirectIndexAdd(int outer, int axisLen, int count, int inner) =>
        ForceDirectIndexAdd ?? (count <= 32 || (count <= 1024 && (long)outer * axisLen * inner * count <= 1L << 27));

    private Action<Index1D, ArrayView<long>, ArrayView<int>, ArrayView<int>, IndexArgs>? _indexAddKeys;
    private Action<Index1D, ArrayView<int>, ArrayView<int>, IndexArgs>? _indexAddRowStarts;
    private Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<float>, IndexArgs>? _indexAddSortedF;
    private Action<Index1D, ArrayView<long>, ArrayView<int>, ArrayView<int>, ArrayView<long>, IndexArgs>? _indexAddSortedL;
    private RadixSortPairs<int, Stride1D.Dense, int, Stride1D.Dense>? _sortRowKeys16, _sortRowKeys32;

    /// <summary>
    /// The stable radix sort of (non-negative int key, int value) pairs by key that IndexAdd (keys: rows) and the
    /// radix ArgSort (keys: row numbers) share; <paramref name="narrow"/> (every key below 2¹⁶) sorts 16 bits only.
    /// </summary>
    private RadixSortPairs<int, Stride1D.Dense, int, Stride1D.Dense> RowKeySort(bool narrow) => narrow
        ? Cached(ref _sortRowKeys16, () => Accelerator.CreateRadixSortPairs<int, Stride1D.Dense, int, Stride1D.Dense, RowKey16>())
        : Cached(ref _sortRowKeys32, () => Accelerator.CreateRadixSortPairs<int, Stride1D.Dense, int, Stride1D.Dense, AscendingInt32>());

    /// <summary>Temporary ints <see cref="RowKeySort"/> needs for <paramref name="count"/> pairs.</summary>
    private int RowKeySortTemp(int count, bool narrow) => narrow
        ? Accelerator.ComputeRadixSortPairsTempStorageSize<int, int, RowKey16>(count)
        : Accelerator.ComputeRadixSortPairsTempStorageSize<int, int, AscendingInt32>(count);

    /// <inheritdoc />
    /// <remarks>
    /// dst[o, idx[j], i] += src[o, j, i], each destination element summed in increasing j (bit-identical to the CPU
    /// backends, run to run). For small problems (<see cref="UsesDirectIndexAdd"/>) each destination element scans
    /// all indices; otherwise the (idx[j], j) pairs are radix-sorted once per call (stable, so j stays increasing
    /// within a row) and each destination element adds just its row's segment: O(count·inner) per outer slice
    /// instead of O(axisLen·inner·count). An index outside [0, axisLen) adds nothing (a kernel cannot throw; the CPU backends
    /// do). Temporary buffers come from the pool; nothing is read back to the host.
    /// </remarks>
    public void IndexAdd(Storage dst, Storage idx, Storage src, int outer, int axisLen, int count, int inner)
    {
        const string op = "IndexAdd";
        int total = outer * axisLen * inner;
        if (total == 0 || count == 0) return;
        var p = new IndexArgs { Outer = outer, AxisLen = axisLen, Count = count, Inner = inner };
        var d = S(dst, op);
        var ix = L(idx, op);
        if (UsesDirectIndexAdd(outer, axisLen, count, inner))
        {
            if (d.DType == DType.Float32)
                Cached(ref _indexAddF, () => LoadIndex<float>(IlgpuKernels.IndexAddFloat))(total, d.F, ix, F(src, op), p);
            else
                Cached(ref _indexAddL, () => LoadIndex<long>(IlgpuKernels.IndexAddLong))(total, d.L, ix, L(src, op), p);
            return;
        }

        // One pooled buffer: [radix-sort temp | keys | order | starts]. The sort's temp goes first so that its
        // 8-byte (key, value) pairs start at the buffer's aligned base.
        bool narrow = axisLen <= ushort.MaxValue; // keys ≤ axisLen fit in 16 bits
        int tempInts = RowKeySortTemp(count, narrow);
        long ints = (long)tempInts + 2L * count + axisLen + 1;
        var buffer = Pool.Rent(ints * sizeof(int));
        try
        {
            ArrayView<byte> bytes = buffer.View;
            var all = bytes.Cast<int>();
            var temp = all.SubView(0, tempInts);
            var keys = all.SubView(tempInts, count);
            var order = all.SubView(tempInts + count, count);
            var starts = all.SubView(tempInts + 2L * count, axisLen + 1);
            var stream = Accelerator.DefaultStream;

            Cached(ref _indexAddKeys, () => Auto<ArrayView<long>, ArrayView<int>, ArrayView<int>, IndexArgs>(IlgpuKernels.IndexAddKeys))(
                count, ix, keys, order, p);
            RowKeySort(narrow)(stream, keys, order, temp);
            Cached(ref _indexAddRowStarts, () => Auto<ArrayView<int>, ArrayView<int>, IndexArgs>(IlgpuKernels.IndexAddRowStarts))(
                axisLen + 1, keys, starts, p);
            if (d.DType == DType.Float32)
                Cached(ref _indexAddSortedF, () => Auto<ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<float>, IndexArgs>(IlgpuKernels.IndexAddSortedFloat))(
                    total, d.F, order, starts, F(src, op), p);
            else
                Cached(ref _indexAddSortedL, () => Auto<ArrayView<long>, ArrayView<int>, ArrayView<int>, ArrayView<long>, IndexArgs>(IlgpuKernels.IndexAddSortedLong))(
                    total, d.L, order, starts, L(src, op), p);
        }
        finally
        {
            // Safe without waiting: whatever rents the buffer next runs after these kernels on the same stream.
            Pool.Return(buffer);
        }
    }
}
