using ILGPU;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>Shape of the index kernels: [outer, axisLen, inner] against [outer, count, inner].</summary>
public struct IndexArgs
{
    /// <summary>Outer extent.</summary>
    public int Outer;
    /// <summary>Length of the indexed axis.</summary>
    public int AxisLen;
    /// <summary>Number of indices along the axis.</summary>
    public int Count;
    /// <summary>Inner extent.</summary>
    public int Inner;
}

// Determinism: the *Add kernels give each destination element to one thread, which adds the matching sources in
// order of j, exactly as the reference loop does; there are no atomics, so float sums do not depend on scheduling.
// The direct kernels here cost O(count) per destination element: IndexAdd uses them for small counts only and
// otherwise sorts the indices first (IlgpuBackend.IndexAdd.cs); ScatterAdd always uses them (see its remarks).
// Out-of-range indices cannot throw on a device: they read as 0 and add nothing.
internal static partial class IlgpuKernels
{
    [IlgpuKernel]
    public static void IndexSelect<T>(Index1D e, ArrayView<T> src, ArrayView<long> idx, ArrayView<T> dst, IndexArgs p) where T : unmanaged
    {
        int i = e % p.Inner, t = e / p.Inner, j = t % p.Count, o = t / p.Count;
        long row = idx[j];
        dst[e] = (ulong)row < (ulong)p.AxisLen ? src[(o * p.AxisLen + (int)row) * p.Inner + i] : default;
    }

    [IlgpuKernel]
    public static void Gather<T>(Index1D e, ArrayView<T> src, ArrayView<long> idx, ArrayView<T> dst, IndexArgs p) where T : unmanaged
    {
        int i = e % p.Inner, t = e / p.Inner, o = t / p.Count;
        long row = idx[e];
        dst[e] = (ulong)row < (ulong)p.AxisLen ? src[(o * p.AxisLen + (int)row) * p.Inner + i] : default;
    }

    [IlgpuKernel]
    public static void IndexAddFloat(Index1D e, ArrayView<float> dst, ArrayView<long> idx, ArrayView<float> src, IndexArgs p)
    {
        int i = e % p.Inner, t = e / p.Inner, row = t % p.AxisLen, o = t / p.AxisLen;
        float acc = dst[e];
        for (int j = 0; j < p.Count; j++)
            if (idx[j] == row) acc += src[(o * p.Count + j) * p.Inner + i];
        dst[e] = acc;
    }

    [IlgpuKernel]
    public static void IndexAddLong(Index1D e, ArrayView<long> dst, ArrayView<long> idx, ArrayView<long> src, IndexArgs p)
    {
        int i = e % p.Inner, t = e / p.Inner, row = t % p.AxisLen, o = t / p.AxisLen;
        long acc = dst[e];
        for (int j = 0; j < p.Count; j++)
            if (idx[j] == row) acc += src[(o * p.Count + j) * p.Inner + i];
        dst[e] = acc;
    }

    [IlgpuKernel]
    public static void ScatterAddFloat(Index1D e, ArrayView<float> dst, ArrayView<long> idx, ArrayView<float> src, IndexArgs p)
    {
        int i = e % p.Inner, t = e / p.Inner, row = t % p.AxisLen, o = t / p.AxisLen;
        float acc = dst[e];
        for (int j = 0; j < p.Count; j++)
        {
            int at = (o * p.Count + j) * p.Inner + i;
            if (idx[at] == row) acc += src[at];
        }
        dst[e] = acc;
    }

    [IlgpuKernel]
    public static void ScatterAddLong(Index1D e, ArrayView<long> dst, ArrayView<long> idx, ArrayView<long> src, IndexArgs p)
    {
        int i = e % p.Inner, t = e / p.Inner, row = t % p.AxisLen, o = t / p.AxisLen;
        long acc = dst[e];
        for (int j = 0; j < p.Count; j++)
        {
            int at = (o * p.Count + j) * p.Inner + i;
            if (idx[at] == row) acc += src[at];
        }
        dst[e] = acc;
    }
}

public sealed partial class IlgpuBackend
{
    private Action<Index1D, ArrayView<float>, ArrayView<long>, ArrayView<float>, IndexArgs>? _indexSelectF, _gatherF, _indexAddF, _scatterAddF;
    private Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, IndexArgs>? _indexSelectL, _gatherL, _indexAddL, _scatterAddL;

    private Action<Index1D, ArrayView<T>, ArrayView<long>, ArrayView<T>, IndexArgs> LoadIndex<T>(Action<Index1D, ArrayView<T>, ArrayView<long>, ArrayView<T>, IndexArgs> k)
        where T : unmanaged => Auto(k);

    /// <inheritdoc />
    public void IndexSelect(Storage src, Storage idx, Storage dst, int outer, int axisLen, int count, int inner)
    {
        int total = outer * count * inner;
        if (total == 0) return;
        var p = new IndexArgs { Outer = outer, AxisLen = axisLen, Count = count, Inner = inner };
        var s = S(src, "IndexSelect");
        var ix = L(idx, "IndexSelect");
        if (s.DType == DType.Float32)
            Cached(ref _indexSelectF, () => LoadIndex<float>(IlgpuKernels.IndexSelect))(total, s.F, ix, F(dst, "IndexSelect").SubView(0, total), p);
        else
            Cached(ref _indexSelectL, () => LoadIndex<long>(IlgpuKernels.IndexSelect))(total, s.L, ix, L(dst, "IndexSelect").SubView(0, total), p);
    }

    /// <inheritdoc />
    public void Gather(Storage src, Storage idx, Storage dst, int outer, int axisLen, int count, int inner)
    {
        int total = outer * count * inner;
        if (total == 0) return;
        var p = new IndexArgs { Outer = outer, AxisLen = axisLen, Count = count, Inner = inner };
        var s = S(src, "Gather");
        var ix = L(idx, "Gather");
        if (s.DType == DType.Float32)
            Cached(ref _gatherF, () => LoadIndex<float>(IlgpuKernels.Gather))(total, s.F, ix, F(dst, "Gather").SubView(0, total), p);
        else
            Cached(ref _gatherL, () => LoadIndex<long>(IlgpuKernels.Gather))(total, s.L, ix, L(dst, "Gather").SubView(0, total), p);
    }

    /// <inheritdoc />
    /// <remarks>
    /// Direct: each destination element scans its count candidates, O(count) per element, in order of j (so
    /// deterministic and bit-identical to the CPU backends). Unlike IndexAdd's one index list, every (o, i) column
    /// has its own indices here, so a sort-based version would need outer·inner segmented sorts; its uses (the
    /// backward of Gather and TopK, with count = experts per token) are routing-sized, where the scan is cheap.
    /// </remarks>
    public void ScatterAdd(Storage dst, Storage idx, Storage src, int outer, int axisLen, int count, int inner)
    {
        int total = outer * axisLen * inner;
        if (total == 0 || count == 0) return;
        var p = new IndexArgs { Outer = outer, AxisLen = axisLen, Count = count, Inner = inner };
        var d = S(dst, "ScatterAdd");
        var ix = L(idx, "ScatterAdd");
        if (d.DType == DType.Float32)
            Cached(ref _scatterAddF, () => LoadIndex<float>(IlgpuKernels.ScatterAddFloat))(total, d.F, ix, F(src, "ScatterAdd"), p);
        else
            Cached(ref _scatterAddL, () => LoadIndex<long>(IlgpuKernels.ScatterAddLong))(total, d.L, ix, L(src, "ScatterAdd"), p);
    }
}
