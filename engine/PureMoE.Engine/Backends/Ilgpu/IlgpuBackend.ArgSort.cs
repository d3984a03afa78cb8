using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.RadixSortOperations;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

// ArgSort of long rows by radix sort, all rows at once, in the order of the reference backend (ascending or
// descending; NaN largest; −0 equal to +0; ties keep the lower index first):
//  1. ArgSortKeys*: key[e] = an unsigned integer whose unsigned order is the element's sort order (see the key
//     functions), value[e] = e, the element's flat index row·n + j.
//  2. ILGPU.Algorithms' radix sort on the (key, e) pairs: all rows mixed, each ordered by value. An LSD radix sort
//     is stable, so equal keys keep e, and thus j, increasing: the lower index first.
//  3. Rows > 1: ArgSortRowKeys writes row[s] = e[s] / n, and a second stable sort by row gathers each row's
//     elements, still in value order: LSD by value, then by row, is a sort by (row, value, j).
//  4. ArgSortColumns: indices[s] = e[s] mod n. After the sort, row r's elements fill positions [r·n, (r + 1)·n).
// Two sorts rather than one on a (row, value) 64-bit key: the value sort's keys stay 4 bytes for float32 (each
// 2-bit pass moves 8-byte pairs, not 12 padded to 16), the row sort needs only 16 bits below 2¹⁶ rows, a single
// row (the long-row case) skips it, and int64 input, whose key alone is 64 bits, takes the same route.
internal static partial class IlgpuKernels
{
    /// <summary>
    /// The float's order as an unsigned key: negatives with all bits flipped (larger magnitude, smaller key),
    /// non-negatives with the sign bit set (above every negative). Every NaN, whatever its sign and payload, maps to
    /// the largest key (above +∞, and equal among NaNs, so they keep index order), −0 to the key of +0 (they compare
    /// equal). Descending complements the key: the reverse order, ties still by index. Integer operations only, so
    /// no device's float mode (denormal flushing) can change it.
    /// </summary>
    public static uint FloatSortKey(float v, bool descending)
    {
        const uint sign = 0x8000_0000u;
        uint bits = Interop.FloatAsInt(v);
        uint key;
        if ((bits & ~sign) > 0x7F80_0000u) key = uint.MaxValue; // NaN: exponent all ones, fraction non-zero
        else if (bits == sign) key = sign;                        // −0 as +0
        else key = (bits & sign) != 0 ? ~bits : bits | sign;
        return descending ? ~key : key;
    }

    /// <summary>The int64's order as an unsigned key: the sign bit flipped; complemented for descending.</summary>
    public static ulong LongSortKey(long v, bool descending)
    {
        ulong key = (ulong)v ^ 0x8000_0000_0000_0000ul;
        return descending ? ~key : key;
    }

    /// <summary>Radix-sort pairs of ArgSort on float32: key[e] = <see cref="FloatSortKey"/>, order[e] = e.</summary>
    [IlgpuKernel]
    public static void ArgSortKeysFloat(Index1D e, ArrayView<float> x, ArrayView<uint> keys, ArrayView<int> order, SortArgs p)
    {
        keys[e] = FloatSortKey(x[e], p.Descending != 0);
        order[e] = e;
    }

    /// <summary>Radix-sort pairs of ArgSort on int64: key[e] = <see cref="LongSortKey"/>, order[e] = e.</summary>
    [IlgpuKernel]
    public static void ArgSortKeysLong(Index1D e, ArrayView<long> x, ArrayView<ulong> keys, ArrayView<int> order, SortArgs p)
    {
        keys[e] = LongSortKey(x[e], p.Descending != 0);
        order[e] = e;
    }

    /// <summary>rowKeys[s] = the row of the element at sorted position s.</summary>
    [IlgpuKernel]
    public static void ArgSortRowKeys(Index1D s, ArrayView<int> order, ArrayView<int> rowKeys, SortArgs p) =>
        rowKeys[s] = order[s] / p.N;

    /// <summary>indices[s] = the column of the element at sorted position s.</summary>
    [IlgpuKernel]
    public static void ArgSortColumns(Index1D s, ArrayView<int> order, ArrayView<long> indices, SortArgs p) =>
        indices[s] = order[s] % p.N;
}

/// <summary>Radix-sort order of ArgSort's float32 keys: all 32 bits, unsigned ascending.</summary>
internal readonly struct SortKey32 : IRadixSortOperation<uint>
{
    /// <inheritdoc />
    public int NumBits => 32;

    /// <inheritdoc />
    public uint DefaultValue => uint.MaxValue;

    /// <inheritdoc />
    public int ExtractRadixBits(uint value, int shift, int bitMask) => (int)(value >> shift) & bitMask;
}

/// <summary>Radix-sort order of ArgSort's int64 keys: all 64 bits, unsigned ascending.</summary>
internal readonly struct SortKey64 : IRadixSortOperation<ulong>
{
    /// <inheritdoc />
    public int NumBits => 64;

    /// <inheritdoc />
    public ulong DefaultValue => ulong.MaxValue;

    /// <inheritdoc />
    public int ExtractRadixBits(ulong value, int shift, int bitMask) => (int)(value >> shift) & bitMask;
}

public sealed partial class IlgpuBackend
{
    /// <summary>
    /// Forces ArgSort's path: true rank counting, false the radix sort, null (default) the choice of
    /// <see cref="UsesRankArgSort"/>. Both give the same indices; benchmarks and tests set it to time or test either.
    /// </summary>
    internal bool? ForceRankArgSort { get; set; }

    /// <summary>
    /// Rank counting when rows are short (n ≤ 64) or the job is small (n ≤ 1024 and rows·n² ≤ 2²⁴ comparisons): there
    /// its one launch beats the radix path's ~100 small launches (four per 2-bit pass: 16 passes for float32 keys, 32
    /// for int64, 8 more for the row sort, plus three elementwise kernels). Measured on an H200 (bench/RESULTS.md):
    /// one row of 4096 took 0.62 ms by ranks, 0.40 ms by radix; a rank thread's loop runs at about 150 ns per element
    /// there, so ranks win below about 2,000 per row, and 1024 keeps a margin.
    /// </summary>
    internal bool UsesRankArgSort(int rows, int n) =>
        ForceRankArgSort ?? (n <= 64 || (n <= 1024 && (long)rows * n * n <= 1L << 24));

    private Action<Index1D, ArrayView<float>, ArrayView<uint>, ArrayView<int>, SortArgs>? _argSortKeysF;
    private Action<Index1D, ArrayView<long>, ArrayView<ulong>, ArrayView<int>, SortArgs>? _argSortKeysL;
    private Action<Index1D, ArrayView<int>, ArrayView<int>, SortArgs>? _argSortRowKeys;
    private Action<Index1D, ArrayView<int>, ArrayView<long>, SortArgs>? _argSortColumns;
    private RadixSortPairs<uint, Stride1D.Dense, int, Stride1D.Dense>? _sortKeys32;
    private RadixSortPairs<ulong, Stride1D.Dense, int, Stride1D.Dense>? _sortKeys64;

    /// <summary>The radix-sort path of <see cref="ArgSort"/> (see the comment at the top of this file).</summary>
    private void ArgSortRadix(IlgpuStorage xs, ArrayView<long> indices, SortArgs p)
    {
        int total = p.Rows * p.N;
        bool isFloat = xs.DType == DType.Float32;
        bool narrowRows = p.Rows <= ushort.MaxValue + 1; // row numbers < 2¹⁶
        int valueTemp = isFloat
            ? Accelerator.ComputeRadixSortPairsTempStorageSize<uint, int, SortKey32>(total)
            : Accelerator.ComputeRadixSortPairsTempStorageSize<ulong, int, SortKey64>(total);
        int rowTemp = p.Rows == 1 ? 0 : RowKeySortTemp(total, narrowRows);

        // One pooled buffer: [radix-sort temp (shared by both sorts) | keys | order | row keys], 8-byte aligned
        // sections. The temp goes first so that its pairs start at the buffer's aligned base.
        static long Align8(long bytes) => (bytes + 7) & ~7L;
        long tempBytes = Align8((long)Math.Max(valueTemp, rowTemp) * sizeof(int));
        long keyBytes = Align8((long)total * (isFloat ? sizeof(uint) : sizeof(ulong)));
        long orderBytes = Align8((long)total * sizeof(int));
        var buffer = Pool.Rent(tempBytes + keyBytes + 2 * orderBytes);
        try
        {
            ArrayView<byte> bytes = buffer.View;
            var temp = bytes.SubView(0, tempBytes).Cast<int>();
            var keys = bytes.SubView(tempBytes, keyBytes);
            var order = bytes.SubView(tempBytes + keyBytes, orderBytes).Cast<int>().SubView(0, total);
            var rowKeys = bytes.SubView(tempBytes + keyBytes + orderBytes, orderBytes).Cast<int>().SubView(0, total);
            var stream = Accelerator.DefaultStream;

            if (isFloat)
            {
                var k = keys.Cast<uint>().SubView(0, total);
                Cached(ref _argSortKeysF, () => Auto<ArrayView<float>, ArrayView<uint>, ArrayView<int>, SortArgs>(IlgpuKernels.ArgSortKeysFloat))(
                    total, xs.F, k, order, p);
                Cached(ref _sortKeys32, () => Accelerator.CreateRadixSortPairs<uint, Stride1D.Dense, int, Stride1D.Dense, SortKey32>())(
                    stream, k, order, temp);
            }
            else
            {
                var k = keys.Cast<ulong>().SubView(0, total);
                Cached(ref _argSortKeysL, () => Auto<ArrayView<long>, ArrayView<ulong>, ArrayView<int>, SortArgs>(IlgpuKernels.ArgSortKeysLong))(
                    total, xs.L, k, order, p);
                Cached(ref _sortKeys64, () => Accelerator.CreateRadixSortPairs<ulong, Stride1D.Dense, int, Stride1D.Dense, SortKey64>())(
                    stream, k, order, temp);
            }

            if (p.Rows > 1)
            {
                Cached(ref _argSortRowKeys, () => Auto<ArrayView<int>, ArrayView<int>, SortArgs>(IlgpuKernels.ArgSortRowKeys))(
                    total, order, rowKeys, p);
                RowKeySort(narrowRows)(stream, rowKeys, order, temp);
            }

            Cached(ref _argSortColumns, () => Auto<ArrayView<int>, ArrayView<long>, SortArgs>(IlgpuKernels.ArgSortColumns))(
                total, order, indices, p);
        }
        finally
        {
            // Safe without waiting: whatever rents the buffer next runs after these kernels on the same stream.
            Pool.Return(buffer);
        }
    }
}
