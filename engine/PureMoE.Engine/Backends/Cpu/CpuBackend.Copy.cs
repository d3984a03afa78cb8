using System.Numerics;
using System.Runtime.CompilerServices;
namespace PureMoE.Backends.Cpu;

public partial class CpuBackend
{
    /// <inheritdoc />
    /// <remarks>
    /// Same-dtype copies collapse mergeable dims, then: one memcpy when the view is contiguous, row copies when the
    /// last dim is contiguous, a blocked 2-D transpose, or an odometer with a strided inner loop. dtype conversions
    /// and copies within one buffer use the reference, except conversions of a contiguous view (a tensor's To(dtype),
    /// a router's decision read as doubles), which convert in one typed loop.
    /// </remarks>
    public override void CopyStrided(Strided src, Shape shape, Storage dst, int dstOffset)
    {
        if (src.Storage.DType != dst.DType && shape.Numel > 0 && IsRowMajor(src.Strides, shape)
            && ConvertContiguous(src.Storage, src.Offset, dst, dstOffset, shape.Numel))
            return;
        if (src.Storage.DType != dst.DType || ReferenceEquals(src.Storage, dst) || shape.Numel == 0)
        {
            base.CopyStrided(src, shape, dst, dstOffset);
            return;
        }
        switch (dst.DType)
        {
            case DType.Float32: CopyT(A<float>(src.Storage), src.Offset, src.Strides, shape, A<float>(dst), dstOffset); break;
            case DType.Float64: CopyT(A<double>(src.Storage), src.Offset, src.Strides, shape, A<double>(dst), dstOffset); break;
            case DType.Int64: CopyT(A<long>(src.Storage), src.Offset, src.Strides, shape, A<long>(dst), dstOffset); break;
            default: base.CopyStrided(src, shape, dst, dstOffset); break;
        }
    }

    /// <summary>True when <paramref name="strides"/> are the row-major strides of <paramref name="shape"/> (extent-1 dims aside).</summary>
    private static bool IsRowMajor(int[] strides, Shape shape)
    {
        int expected = 1;
        for (int k = shape.Rank - 1; k >= 0; k--)
        {
            if (shape[k] == 1) continue;
            if (strides[k] != expected) return false;
            expected *= shape[k];
        }
        return true;
    }

    /// <summary>
    /// A dtype conversion of n contiguous elements, with the reference's rounding (every value goes through double,
    /// as the reference's element-by-element copy does): false for a pair of dtypes it leaves to the reference
    /// (conversions to int64, whose truncation stays the reference's).
    /// </summary>
    private static bool ConvertContiguous(Storage src, int offset, Storage dst, int dstOffset, int n)
    {
        switch (src.DType, dst.DType)
        {
            case (DType.Float32, DType.Float64): Convert<float, double>(src, offset, dst, dstOffset, n); return true;
            case (DType.Float64, DType.Float32): Convert<double, float>(src, offset, dst, dstOffset, n); return true;
            case (DType.Int64, DType.Float64): Convert<long, double>(src, offset, dst, dstOffset, n); return true;
            case (DType.Int64, DType.Float32): Convert<long, float>(src, offset, dst, dstOffset, n); return true;
            default: return false;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Convert<TFrom, TTo>(Storage src, int offset, Storage dst, int dstOffset, int n)
        where TFrom : INumberBase<TFrom> where TTo : INumberBase<TTo>
    {
        ReadOnlySpan<TFrom> s = A<TFrom>(src).AsSpan(offset, n);
        Span<TTo> d = A<TTo>(dst).AsSpan(dstOffset, n);
        for (int i = 0; i < s.Length; i++) d[i] = TTo.CreateTruncating(double.CreateTruncating(s[i]));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void CopyT<T>(T[] s, int off, int[] strides, Shape shape, T[] d, int doff)
    {
        int rank = shape.Rank, numel = shape.Numel;
        // Collapse: drop extent-1 dims, merge d into its predecessor when stride[prev] = stride[d]·extent[d].
        Span<int> dims = stackalloc int[Math.Max(1, rank)], st = stackalloc int[Math.Max(1, rank)];
        int r = 0;
        for (int k = 0; k < rank; k++)
        {
            if (shape[k] == 1) continue;
            if (r > 0 && st[r - 1] == strides[k] * shape[k]) { dims[r - 1] *= shape[k]; st[r - 1] = strides[k]; }
            else { dims[r] = shape[k]; st[r] = strides[k]; r++; }
        }
        if (r == 0) { d[doff] = s[off]; return; }
        if (r == 1 && st[0] == 1) { s.AsSpan(off, numel).CopyTo(d.AsSpan(doff, numel)); return; }
        if (r == 2 && st[1] != 1)
        {
            Transpose2D(s, off, dims[0], dims[1], st[0], st[1], d, doff);
            return;
        }
        int inner = dims[r - 1], innerStride = st[r - 1], rows = numel / inner;
        Span<int> counter = stackalloc int[r];
        int so = off;
        for (int row = 0; row < rows; row++)
        {
            int at = doff + row * inner;
            if (innerStride == 1) s.AsSpan(so, inner).CopyTo(d.AsSpan(at, inner));
            else for (int i = 0, p = so; i < inner; i++, p += innerStride) d[at + i] = s[p];
            // Advance the outer odometer (dims 0 .. r−2).
            for (int k = r - 2; k >= 0; k--)
            {
                so += st[k];
                if (++counter[k] < dims[k]) break;
                so -= st[k] * dims[k];
                counter[k] = 0;
            }
        }
    }

    // d[doff + i·cols + j] = s[off + i·s0 + j·s1], in 32×32 tiles so both sides stay in cache.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose2D<T>(T[] s, int off, int rows, int cols, int s0, int s1, T[] d, int doff)
    {
        const int B = 32;
        for (int i0 = 0; i0 < rows; i0 += B)
        {
            int i1 = Math.Min(rows, i0 + B);
            for (int j0 = 0; j0 < cols; j0 += B)
            {
                int j1 = Math.Min(cols, j0 + B);
                for (int i = i0; i < i1; i++)
                {
                    int at = doff + i * cols, p = off + i * s0 + j0 * s1;
                    for (int j = j0; j < j1; j++, p += s1) d[at + j] = s[p];
                }
            }
        }
    }
}
