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
    /// <summary>Reduced elements per chunk (the chunked column reduction; see <see cref="IlgpuBackend.ChunkRows"/>).</summary>
    public int Chunk;
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

    /// <summary>
    /// inner &gt; 1, long n: the first stage of a chunked column reduction. Thread e = (o·chunks + c)·inner + i
    /// reduces x[o, c·Chunk .. (c+1)·Chunk, i] in order into y[e] (y viewed as [outer, chunks, inner]).
    /// </summary>
    [IlgpuKernel]
    public static void ReduceColumnChunks<TOp>(Index1D e, ArrayView<float> x, ArrayView<float> y, ReduceArgs p) where TOp : struct, IReduceOp
    {
        int chunks = (p.N + p.Chunk - 1) / p.Chunk;
        int i = e % p.Inner, oc = e / p.Inner, c = oc % chunks, o = oc / chunks;
        int end = XMath.Min(p.N, (c + 1) * p.Chunk);
        float acc = default(TOp).Identity;
        for (int j = c * p.Chunk; j < end; j++) acc = default(TOp).Combine(acc, x[p.Offset + (o * p.N + j) * p.Inner + i]);
        y[e] = acc;
    }
}

public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ReduceArgs>? _sumRows, _maxRows;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ReduceArgs>? _sumCols, _maxCols;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ReduceArgs>? _sumColChunks, _maxColChunks;

    /// <summary>
    /// Reductions with at most this many outputs are chunked along n when n is long (a GPU runs tens of thousands
    /// of threads at once; fewer outputs than that, each a thread looping over all of n, leave it waiting on memory).
    /// </summary>
    internal const int FewOutputs = 1 << 14;

    /// <summary>Rows up to this length are reduced (and softmaxed) one per thread rather than one per group.</summary>
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
            p.Chunk = ChunkRows(n);
            int chunks = (n + p.Chunk - 1) / p.Chunk;
            if (inner == 1 || chunks == 1 || outputs > FewOutputs)
            {
                k(outputs, xs, ys, p);
                return;
            }
            // Few outputs over a long n: a thread per (chunk, output), then the chunks reduced in order. Chunks depend
            // only on the shape, so the result is the same bits run to run.
            var chunked = sum
                ? Cached(ref _sumColChunks, () => Auto<ArrayView<float>, ArrayView<float>, ReduceArgs>(IlgpuKernels.ReduceColumnChunks<SumReduce>))
                : Cached(ref _maxColChunks, () => Auto<ArrayView<float>, ArrayView<float>, ReduceArgs>(IlgpuKernels.ReduceColumnChunks<MaxReduce>));
            using var partial = AllocateUninitialized(DType.Float32, outer * chunks * inner);
            chunked(outer * chunks * inner, xs, F(partial, "Reduce"), p);
            k(outputs, F(partial, "Reduce"), ys, new ReduceArgs { Offset = 0, Outer = outer, N = chunks, Inner = inner });
        }
    }

    /// <summary>
    /// Elements per chunk when a long reduction is cut into chunks reduced in parallel and then in order: a power of two
    /// near √n, at least 16 (so up to 16 take one pass). Depends only on n: the same chunks, the same bits, every run.
    /// </summary>
    internal static int ChunkRows(int n)
    {
        int chunk = 16;
        while ((long)chunk * chunk < n) chunk *= 2;
        return chunk;
    }
}
