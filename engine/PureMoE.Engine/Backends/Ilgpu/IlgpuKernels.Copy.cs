using ILGPU;

namespace PureMoE.Backends.Ilgpu;

/// <summary>Marks a static method as an ILGPU kernel entry point (the OpenCL compile test enumerates them).</summary>
[AttributeUsage(AttributeTargets.Method)]
internal sealed class IlgpuKernelAttribute : Attribute
{
}

/// <summary>Six ints in a struct (kernel parameters cannot be arrays): shapes and strides of up to 6 dimensions.</summary>
public struct Dims6
{
    /// <summary>Dimension values.</summary>
    public int D0, D1, D2, D3, D4, D5;

    /// <summary>Value of dimension <paramref name="i"/>.</summary>
    public readonly int Get(int i) => i switch
    {
        0 => D0,
        1 => D1,
        2 => D2,
        3 => D3,
        4 => D4,
        _ => D5,
    };

    /// <summary>Sets dimension <paramref name="i"/>.</summary>
    public void Set(int i, int v)
    {
        switch (i)
        {
            case 0: D0 = v; break;
            case 1: D1 = v; break;
            case 2: D2 = v; break;
            case 3: D3 = v; break;
            case 4: D4 = v; break;
            default: D5 = v; break;
        }
    }
}

/// <summary>
/// Up to three strided operands over one output shape of at most 6 dimensions (after merging dimensions that
/// are contiguous in every operand and dropping size-1 ones): the parameter of the broadcasting kernels.
/// </summary>
public struct StridedArgs
{
    /// <summary>Maximum rank after merging.</summary>
    public const int MaxRank = 6;

    /// <summary>Rank (0 for a scalar).</summary>
    public int Rank;
    /// <summary>Output extents.</summary>
    public Dims6 Shape;
    /// <summary>Strides of operands 0, 1, 2.</summary>
    public Dims6 S0, S1, S2;
    /// <summary>Element offsets of operands 0, 1, 2.</summary>
    public int O0, O1, O2;

    /// <summary>Merges dimensions and packs the operands; errors (naming the op) above 6 merged dimensions.</summary>
    public static StridedArgs Create(Shape shape, string op, params Strided[] operands)
    {
        var dims = new List<int>();
        var strides = operands.Select(_ => new List<int>()).ToArray();
        for (int d = 0; d < shape.Rank; d++)
        {
            if (shape[d] == 1) continue;
            int last = dims.Count - 1;
            bool merge = last >= 0;
            for (int o = 0; o < operands.Length && merge; o++)
                merge = strides[o][last] == operands[o].Strides[d] * shape[d];
            if (merge)
            {
                dims[last] *= shape[d];
                for (int o = 0; o < operands.Length; o++) strides[o][last] = operands[o].Strides[d];
            }
            else
            {
                dims.Add(shape[d]);
                for (int o = 0; o < operands.Length; o++) strides[o].Add(operands[o].Strides[d]);
            }
        }
        if (dims.Count > MaxRank)
            throw new NotSupportedException(
                $"{op}: the strided view of shape {shape} has {dims.Count} non-mergeable dimensions; ILGPU kernels take at most {MaxRank}");
        var a = new StridedArgs { Rank = dims.Count };
        for (int d = 0; d < dims.Count; d++)
        {
            a.Shape.Set(d, dims[d]);
            if (operands.Length > 0) a.S0.Set(d, strides[0][d]);
            if (operands.Length > 1) a.S1.Set(d, strides[1][d]);
            if (operands.Length > 2) a.S2.Set(d, strides[2][d]);
        }
        if (operands.Length > 0) a.O0 = operands[0].Offset;
        if (operands.Length > 1) a.O1 = operands[1].Offset;
        if (operands.Length > 2) a.O2 = operands[2].Offset;
        return a;
    }

    /// <summary>Offset of flat output index <paramref name="i"/> in operand 0.</summary>
    public readonly int Offset0(int i)
    {
        int o = O0;
        for (int d = Rank - 1; d >= 0; d--)
        {
            int n = Shape.Get(d);
            o += i % n * S0.Get(d);
            i /= n;
        }
        return o;
    }

    /// <summary>Offsets of flat output index <paramref name="i"/> in operands 0 and 1.</summary>
    public readonly void Offsets2(int i, out int o0, out int o1)
    {
        o0 = O0;
        o1 = O1;
        for (int d = Rank - 1; d >= 0; d--)
        {
            int n = Shape.Get(d), c = i % n;
            o0 += c * S0.Get(d);
            o1 += c * S1.Get(d);
            i /= n;
        }
    }

    /// <summary>Offsets of flat output index <paramref name="i"/> in operands 0, 1 and 2.</summary>
    public readonly void Offsets3(int i, out int o0, out int o1, out int o2)
    {
        o0 = O0;
        o1 = O1;
        o2 = O2;
        for (int d = Rank - 1; d >= 0; d--)
        {
            int n = Shape.Get(d), c = i % n;
            o0 += c * S0.Get(d);
            o1 += c * S1.Get(d);
            o2 += c * S2.Get(d);
            i /= n;
        }
    }
}

/// <summary>The ILGPU kernels of <see cref="IlgpuBackend"/>, one file per family. Every entry point carries [IlgpuKernel].</summary>
internal static partial class IlgpuKernels
{
    [IlgpuKernel]
    public static void Fill<T>(Index1D i, ArrayView<T> dst, T value) where T : unmanaged => dst[i] = value;

    [IlgpuKernel]
    public static void CopyStrided<T>(Index1D i, ArrayView<T> src, ArrayView<T> dst, StridedArgs p) where T : unmanaged =>
        dst[i] = src[p.Offset0(i)];

    [IlgpuKernel]
    public static void CopyFloatToLong(Index1D i, ArrayView<float> src, ArrayView<long> dst, StridedArgs p) =>
        dst[i] = (long)src[p.Offset0(i)];

    [IlgpuKernel]
    public static void CopyLongToFloat(Index1D i, ArrayView<long> src, ArrayView<float> dst, StridedArgs p) =>
        dst[i] = src[p.Offset0(i)];
}
