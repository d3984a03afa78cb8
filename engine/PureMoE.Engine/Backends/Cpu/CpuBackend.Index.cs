using System.Runtime.CompilerServices;
using System.Numerics;
using System.Numerics.Tensors;

namespace PureMoE.Backends.Cpu;

public partial class CpuBackend
{
    // Validates every index up front (same message as the reference) so that parallel loops never throw.
    private static void CheckIndices(long[] ix, int start, int count, int axisLen, string op)
    {
        for (int j = 0; j < count; j++) CheckIndex(ix[start + j], axisLen, op);
    }

    /// <inheritdoc />
    public override void IndexSelect(Storage src, Storage idx, Storage dst, int outer, int axisLen, int count, int inner)
    {
        if (outer <= 0 || count <= 0 || inner <= 0) return;
        switch (src.DType)
        {
            case DType.Float32: IndexSelectT(A<float>(src), A<long>(idx), A<float>(dst), outer, axisLen, count, inner); break;
            case DType.Float64: IndexSelectT(A<double>(src), A<long>(idx), A<double>(dst), outer, axisLen, count, inner); break;
            case DType.Int64: IndexSelectT(A<long>(src), A<long>(idx), A<long>(dst), outer, axisLen, count, inner); break;
            default: base.IndexSelect(src, idx, dst, outer, axisLen, count, inner); break;
        }
    }

    private static void IndexSelectT<T>(T[] s, long[] ix, T[] d, int outer, int axisLen, int count, int inner)
    {
        CheckIndices(ix, 0, count, axisLen, "IndexSelect");
        Par.For(outer * count, inner, (start, end) =>
        {
            for (int t = start; t < end; t++)
            {
                int o = t / count, j = t - o * count;
                if (inner == 1) d[t] = s[o * axisLen + (int)ix[j]];
                else s.AsSpan((o * axisLen + (int)ix[j]) * inner, inner).CopyTo(d.AsSpan(t * inner, inner));
            }
        });
    }

    /// <inheritdoc />
    /// <remarks>Each destination element receives its sources in j order (as the reference): split over outer or inner only.</remarks>
    public override void IndexAdd(Storage dst, Storage idx, Storage src, int outer, int axisLen, int count, int inner)
    {
        if (outer <= 0 || count <= 0 || inner <= 0 || ReferenceEquals(dst, src)) { base.IndexAdd(dst, idx, src, outer, axisLen, count, inner); return; }
        if (dst.DType == DType.Float32) IndexAddT(A<float>(dst), A<long>(idx), A<float>(src), outer, axisLen, count, inner);
        else if (dst.DType == DType.Float64) IndexAddT(A<double>(dst), A<long>(idx), A<double>(src), outer, axisLen, count, inner);
        else base.IndexAdd(dst, idx, src, outer, axisLen, count, inner);
    }

    private static void IndexAddT<T>(T[] d, long[] ix, T[] s, int outer, int axisLen, int count, int inner)
        where T : IFloatingPointIeee754<T>
    {
        CheckIndices(ix, 0, count, axisLen, "IndexAdd");
        if (inner == 1)
        {
            for (int o = 0; o < outer; o++)
                for (int j = 0; j < count; j++) d[o * axisLen + (int)ix[j]] += s[o * count + j];
            return;
        }
        long work = (long)count * inner;
        if (outer >= Par.Workers || work * outer < Par.Threshold)
        {
            Par.For(outer, work, (os, oe) =>
            {
                for (int o = os; o < oe; o++) AddRows(d, ix, s, o, axisLen, count, inner, 0, inner);
            });
        }
        else
        {
            for (int o = 0; o < outer; o++)
            {
                int oo = o;
                Par.For(inner, count, (i0, i1) => AddRows(d, ix, s, oo, axisLen, count, inner, i0, i1), 64);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AddRows<T>(T[] d, long[] ix, T[] s, int o, int axisLen, int count, int inner, int i0, int i1)
        where T : IFloatingPointIeee754<T>
    {
        int len = i1 - i0;
        for (int j = 0; j < count; j++)
        {
            Span<T> dr = d.AsSpan((o * axisLen + (int)ix[j]) * inner + i0, len);
            TensorPrimitives.Add(dr, s.AsSpan((o * count + j) * inner + i0, len), dr);
        }
    }

    /// <inheritdoc />
    public override void Gather(Storage src, Storage idx, Storage dst, int outer, int axisLen, int count, int inner)
    {
        if (inner != 1) { base.Gather(src, idx, dst, outer, axisLen, count, inner); return; }
        switch (src.DType)
        {
            case DType.Float32: GatherT(A<float>(src), A<long>(idx), A<float>(dst), outer, axisLen, count); break;
            case DType.Float64: GatherT(A<double>(src), A<long>(idx), A<double>(dst), outer, axisLen, count); break;
            case DType.Int64: GatherT(A<long>(src), A<long>(idx), A<long>(dst), outer, axisLen, count); break;
            default: base.Gather(src, idx, dst, outer, axisLen, count, inner); break;
        }
    }

    private static void GatherT<T>(T[] s, long[] ix, T[] d, int outer, int axisLen, int count)
    {
        for (int o = 0; o < outer; o++)
        {
            int so = o * axisLen, at = o * count;
            for (int j = 0; j < count; j++) d[at + j] = s[so + CheckIndex(ix[at + j], axisLen, "Gather")];
        }
    }

    /// <inheritdoc />
    public override void ScatterAdd(Storage dst, Storage idx, Storage src, int outer, int axisLen, int count, int inner)
    {
        if (inner != 1 || ReferenceEquals(dst, src)) { base.ScatterAdd(dst, idx, src, outer, axisLen, count, inner); return; }
        if (dst.DType == DType.Float32) ScatterAddT(A<float>(dst), A<long>(idx), A<float>(src), outer, axisLen, count);
        else if (dst.DType == DType.Float64) ScatterAddT(A<double>(dst), A<long>(idx), A<double>(src), outer, axisLen, count);
        else base.ScatterAdd(dst, idx, src, outer, axisLen, count, inner);
    }

    private static void ScatterAddT<T>(T[] d, long[] ix, T[] s, int outer, int axisLen, int count)
        where T : IFloatingPointIeee754<T>
    {
        for (int o = 0; o < outer; o++)
        {
            int dO = o * axisLen, at = o * count;
            for (int j = 0; j < count; j++) d[dO + CheckIndex(ix[at + j], axisLen, "ScatterAdd")] += s[at + j];
        }
    }
}
