using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>An associative combine with its identity: the type argument of the reduction kernels.</summary>
public interface IReduceOp
{
    /// <summary>The identity element (0 for Σ, −∞ for max).</summary>
    float Identity { get; }

    /// <summary>acc ⊕ v.</summary>
    float Combine(float acc, float v);
}

/// <summary>Σ.</summary>
public struct SumReduce : IReduceOp
{
    /// <inheritdoc />
    public readonly float Identity => 0f;
    /// <inheritdoc />
    public readonly float Combine(float acc, float v) => acc + v;
}

/// <summary>max, NaN-propagating (as the reference backend).</summary>
public struct MaxReduce : IReduceOp
{
    /// <inheritdoc />
    public readonly float Identity => float.NegativeInfinity;
    /// <inheritdoc />
    public readonly float Combine(float acc, float v) => XMath.IsNaN(acc) ? acc : XMath.IsNaN(v) || v > acc ? v : acc;
}

/// <summary>Shape of a row reduction.</summary>
public struct ReduceArgs
{
    /// <summary>Element offset of x.</summary>
    public int Offset;
    /// <summary>Outer extent.</summary>
    public int Outer;
    /// <summary>Reduced extent.</summary>
    public int N;
    /// <summary>Inner extent.</summary>
    public int Inner;
}

internal static partial class IlgpuKernels
{
    /// <summary>
    /// Tree reduction of one value per thread over the group (a power of two) through shared memory; every thread
    /// gets the result. The order of operations depends only on the group size: deterministic.
    /// </summary>
    public static float GroupReduce<TOp>(float v, ArrayView<float> shared) where TOp : struct, IReduceOp
    {
        int t = Group.IdxX;
        shared[t] = v;
        Group.Barrier();
        for (int s = Group.DimX >> 1; s > 0; s >>= 1)
        {
            if (t < s) shared[t] = default(TOp).Combine(shared[t], shared[t + s]);
            Group.Barrier();
        }
        float r = shared[0];
        Group.Barrier();
        return r;
    }

    /// <summary>inner == 1: one group per output; threads stride over the row, then a tree reduction.</summary>
    [IlgpuKernel]
    public static void ReduceRows<TOp>(ArrayView<float> x, ArrayView<float> y, ReduceArgs p) where TOp : struct, IReduceOp
    {
        var shared = SharedMemory.GetDynamic<float>();
        int row = Grid.IdxX;
        int baseIndex = p.Offset + row * p.N;
        float acc = default(TOp).Identity;
        for (int j = Group.IdxX; j < p.N; j += Group.DimX) acc = default(TOp).Combine(acc, x[baseIndex + j]);
        float r = GroupReduce<TOp>(acc, shared);
        if (Group.IdxX == 0) y[row] = r;
    }

    /// <summary>inner &gt; 1: one thread per output (o, i), looping over n in order (coalesced across i).</summary>
    [IlgpuKernel]
    public static void ReduceColumns<TOp>(Index1D e, ArrayView<float> x, ArrayView<float> y, ReduceArgs p) where TOp : struct, IReduceOp
    {
        int o = e / p.Inner, i = e % p.Inner;
        float acc = default(TOp).Identity;
        for (int j = 0; j < p.N; j++) acc = default(TOp).Combine(acc, x[p.Offset + (o * p.N + j) * p.Inner + i]);
        y[e] = acc;
    }
}

public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ReduceArgs>? _sumRows, _maxRows;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ReduceArgs>? _sumCols, _maxCols;

    /// <summary>Rows up to this length are reduced one per thread rather than one per group.</summary>
    internal const int ShortRow = 32;

    /// <inheritdoc />
    public void Reduce(ReduceOp op, Storage x, int xOffset, Storage y, int outer, int n, int inner)
    {
        int outputs = outer * inner;
        if (outputs == 0) return;
        var xs = F(x, "Reduce");
        var ys = F(y, "Reduce").SubView(0, outputs);
        var p = new ReduceArgs { Offset = xOffset, Outer = outer, N = n, Inner = inner };
        bool sum = op == ReduceOp.Sum;
        if (op is not (ReduceOp.Sum or ReduceOp.Max)) throw new ArgumentOutOfRangeException(nameof(op), op, "Reduce: unknown op");
        // A group per row pays off for long rows; short ones (a router's k gates, a handful of experts) would leave
        // nearly all of a group's threads idle, so each thread sums a row of its own instead.
        if (inner == 1 && n > ShortRow)
        {
            var k = sum
                ? Cached(ref _sumRows, () => Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ReduceArgs>(IlgpuKernels.ReduceRows<SumReduce>))
                : Cached(ref _maxRows, () => Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ReduceArgs>(IlgpuKernels.ReduceRows<MaxReduce>));
            k(RowConfig(outer), xs, ys, p);
        }
        else
        {
            var k = sum
                ? Cached(ref _sumCols, () => Auto<ArrayView<float>, ArrayView<float>, ReduceArgs>(IlgpuKernels.ReduceColumns<SumReduce>))
                : Cached(ref _maxCols, () => Auto<ArrayView<float>, ArrayView<float>, ReduceArgs>(IlgpuKernels.ReduceColumns<MaxReduce>));
            k(outputs, xs, ys, p);
        }
    }
}
