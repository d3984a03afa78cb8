using ILGPU;
using ILGPU.Algorithms;

namespace PureMoE.Backends.Ilgpu;

/// <summary>
/// The multi-tensor ("foreach") kernels: one launch works on up to <see cref="GroupOperands.Count"/> tensors, passed
/// as one struct of views (a kernel cannot take an array of views). A host-built table cuts the tensors into
/// chunks, one group per chunk: entry b is (slot, first element, element count), and the group's threads stride
/// over its chunk (adjacent threads, adjacent elements). Each chunk's work is fixed by the table, so results do not
/// depend on scheduling.
/// </summary>
internal static partial class IlgpuKernels
{
    /// <summary>Ints per chunk in a foreach table: slot, first element, element count.</summary>
    public const int ForeachChunkInts = 3;

    /// <summary>partials[first + b] = Σ x² over chunk b (a tree sum per group, in shared memory).</summary>
    [IlgpuKernel]
    public static void ForeachSumOfSquares(ArrayView<int> chunks, GroupOperands x, ArrayView<float> partials, int first)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int e = Grid.IdxX * ForeachChunkInts;
        var view = x.Get(chunks[e]);
        int start = chunks[e + 1], count = chunks[e + 2];
        float acc = 0f;
        for (int j = Group.IdxX; j < count; j += Group.DimX)
        {
            float v = view[start + j];
            acc += v * v;
        }
        float sum = GroupReduce<SumReduce>(acc, shared);
        if (Group.IdxX == 0) partials[first + Grid.IdxX] = sum;
    }

    /// <summary>
    /// Gradient clipping's scalars (one thread): norm = √s and coefficient = min(1, maxNorm / (norm + 1e-6)), NaN
    /// when s is NaN, in float32 as the host backends compute them.
    /// </summary>
    [IlgpuKernel]
    public static void ClipCoefficient(Index1D i, ArrayView<float> sumSquares, ArrayView<float> norm, ArrayView<float> coefficient, float maxNorm)
    {
        float n = XMath.Sqrt(sumSquares[0]), c = maxNorm / (n + 1e-6f);
        norm[0] = n;
        coefficient[0] = c > 1f ? 1f : c;
    }

    /// <summary>x ← x·scale[0] over each chunk.</summary>
    [IlgpuKernel]
    public static void ForeachScale(ArrayView<int> chunks, GroupOperands x, ArrayView<float> scale)
    {
        int e = Grid.IdxX * ForeachChunkInts;
        var view = x.Get(chunks[e]);
        int start = chunks[e + 1], count = chunks[e + 2];
        float s = scale[0];
        for (int j = Group.IdxX; j < count; j += Group.DimX) view[start + j] = view[start + j] * s;
    }

    /// <summary>
    /// AdamW over each chunk. The shared scalars come in <paramref name="a"/>; each slot's own step size and
    /// √(1 − β₂ᵗ) follow the chunk entries in the table (float bits: 2 per slot, after Grid.DimX entries).
    /// </summary>
    [IlgpuKernel]
    public static void ForeachAdamW(ArrayView<int> chunks, GroupOperands param, GroupOperands grad, GroupOperands m, GroupOperands v, AdamWArgs a)
    {
        int e = Grid.IdxX * ForeachChunkInts;
        int slot = chunks[e], start = chunks[e + 1], count = chunks[e + 2];
        int scalars = Grid.DimX * ForeachChunkInts + 2 * slot;
        a.StepSize = Interop.IntAsFloat((uint)chunks[scalars]);
        a.SqrtBc2 = Interop.IntAsFloat((uint)chunks[scalars + 1]);
        var p = param.Get(slot).SubView(start, count);
        var g = grad.Get(slot).SubView(start, count);
        var ms = m.Get(slot).SubView(start, count);
        var vs = v.Get(slot).SubView(start, count);
        for (int j = Group.IdxX; j < count; j += Group.DimX) AdamWElement(p, g, ms, vs, j, a);
    }
}
