using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>Shape of the weighted combine: index and w are [Tokens, M], rows [RowCount, D], out [Tokens, D].</summary>
public struct GatherSumArgs
{
    /// <summary>Number of tokens T.</summary>
    public int Tokens;
    /// <summary>Pairs (slots) per token m.</summary>
    public int M;
    /// <summary>Row width d.</summary>
    public int D;
    /// <summary>Number of rows that index may name.</summary>
    public int RowCount;
    /// <summary>1 when the backward writes dRows.</summary>
    public int WriteRows;
    /// <summary>1 when the backward writes dW.</summary>
    public int WriteWeights;
}

// The fused MoE kernels. SwiGLU and its backward are one elementwise pass each. The combine gives each output
// element (t, i) to one thread that adds its m terms in order of j, exactly as the reference loop does: no atomics,
// so the result is deterministic; consecutive threads take consecutive i, so reads of a row and writes of out are
// coalesced. The backward gives each pair (t, j) one group: the threads stride over i (coalesced), write
// dRows[index[t, j], i] = w·dOut[t, i] and reduce Σ_i dOut·rows with the shared-memory tree of GroupReduce.
// Indices are trusted as produced by DispatchLayout (Tensor.WeightedGatherSum validates them on the host): on the
// device an index outside [0, rowCount) cannot throw, so it is treated like −1 (adds nothing, gets dW = 0).
internal static partial class IlgpuKernels
{
    /// <summary>y = silu(gate)·up = gate/(1+e^−gate)·up (the reference formula).</summary>
    [IlgpuKernel]
    public static void SwiGlu(Index1D i, ArrayView<float> gate, ArrayView<float> up, ArrayView<float> y)
    {
        float x = gate[i];
        y[i] = x / (1f + XMath.Exp(-x)) * up[i];
    }

    /// <summary>dGate = dy·up·silu'(gate), dUp = dy·silu(gate); dy is read before dUp is written (they may alias).</summary>
    [IlgpuKernel]
    public static void SwiGluBackward(Index1D i, ArrayView<float> gate, ArrayView<float> up, ArrayView<float> dy,
        ArrayView<float> dGate, ArrayView<float> dUp)
    {
        float x = gate[i], d = dy[i], u = up[i];
        float s = 1f / (1f + XMath.Exp(-x));
        dGate[i] = d * u * (s * (1f + x * (1f - s)));
        dUp[i] = d * (x * s);
    }

    /// <summary>One thread per output element (t, i): out[t, i] = Σ_j w[t, j]·rows[index[t, j], i] in order of j.</summary>
    [IlgpuKernel]
    public static void WeightedGatherSum(Index1D e, ArrayView<float> rows, ArrayView<long> index, ArrayView<float> w,
        ArrayView<float> output, GatherSumArgs p)
    {
        int t = e / p.D, i = e - t * p.D;
        float acc = 0f;
        for (int j = 0; j < p.M; j++)
        {
            long r = index[t * p.M + j];
            if ((ulong)r < (ulong)p.RowCount) acc += w[t * p.M + j] * rows[(int)r * p.D + i];
        }
        output[e] = acc;
    }

    /// <summary>
    /// One group per pair (t, j): dRows[r, :] = w[t, j]·dOut[t, :] and dW[t, j] = Σ_i dOut[t, i]·rows[r, i] (tree
    /// reduction, deterministic), r = index[t, j]; a pair without a valid row writes no row and dW = 0.
    /// </summary>
    [IlgpuKernel]
    public static void WeightedGatherSumBackward(ArrayView<float> rows, ArrayView<long> index, ArrayView<float> w,
        ArrayView<float> dOut, ArrayView<float> dRows, ArrayView<float> dW, GatherSumArgs p)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int pair = Grid.IdxX, t = pair / p.M, step = Group.DimX;
        long r = index[pair];
        bool valid = (ulong)r < (ulong)p.RowCount;
        int src = t * p.D, dst = valid ? (int)r * p.D : 0;
        float weight = w[pair], acc = 0f;
        if (valid)
        {
            for (int i = Group.IdxX; i < p.D; i += step)
            {
                float g = dOut[src + i];
                if (p.WriteRows != 0) dRows[dst + i] = weight * g;
                if (p.WriteWeights != 0) acc += g * rows[dst + i];
            }
        }
        // Every thread of the group reaches the barriers of the reduction, valid pair or not.
        if (p.WriteWeights != 0)
        {
            float sum = GroupReduce<SumReduce>(acc, shared);
            if (Group.IdxX == 0) dW[pair] = valid ? sum : 0f;
        }
    }
}

public sealed partial class IlgpuBackend
{
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>? _swiGlu;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>? _swiGluBackward;
    private Action<Index1D, ArrayView<float>, ArrayView<long>, ArrayView<float>, ArrayView<float>, GatherSumArgs>? _gatherSum;
    private Action<KernelConfig, ArrayView<float>, ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GatherSumArgs>? _gatherSumBackward;

    /// <inheritdoc />
    public void SwiGlu(Storage gate, Storage up, Storage y, int n)
    {
        if (n == 0) return;
        Cached(ref _swiGlu, () => Auto<ArrayView<float>, ArrayView<float>, ArrayView<float>>(IlgpuKernels.SwiGlu))(
            n, F(gate, "SwiGlu"), F(up, "SwiGlu"), F(y, "SwiGlu").SubView(0, n));
    }

    /// <inheritdoc />
    public void SwiGluBackward(Storage gate, Storage up, Storage dy, Storage dGate, Storage dUp, int n)
    {
        if (n == 0) return;
        Cached(ref _swiGluBackward, () => Auto<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(IlgpuKernels.SwiGluBackward))(
            n, F(gate, "SwiGluBackward"), F(up, "SwiGluBackward"), F(dy, "SwiGluBackward"),
            F(dGate, "SwiGluBackward").SubView(0, n), F(dUp, "SwiGluBackward").SubView(0, n));
    }

    /// <inheritdoc />
    public void WeightedGatherSum(Storage rows, Storage index, Storage w, Storage output, int tokens, int m, int d, int rowCount)
    {
        const string op = "WeightedGatherSum";
        int total = tokens * d;
        if (total == 0) return;
        var p = new GatherSumArgs { Tokens = tokens, M = m, D = d, RowCount = rowCount };
        Cached(ref _gatherSum, () => Auto<ArrayView<float>, ArrayView<long>, ArrayView<float>, ArrayView<float>, GatherSumArgs>(IlgpuKernels.WeightedGatherSum))(
            total, F(rows, op), L(index, op), F(w, op), F(output, op).SubView(0, total), p);
    }

    /// <inheritdoc />
    public void WeightedGatherSumBackward(Storage rows, Storage index, Storage w, Storage dOut, Storage? dRows, Storage? dW,
        int tokens, int m, int d, int rowCount)
    {
        const string op = "WeightedGatherSumBackward";
        if (dRows is null && dW is null) return;
        // Rows no pair reads get 0: clear all of dRows, then the kernel writes the rows that are read.
        if (dRows is not null) Fill(dRows, 0, rowCount * d, 0);
        int pairs = tokens * m;
        if (pairs == 0) return;
        if (d == 0)
        {
            if (dW is not null) Fill(dW, 0, pairs, 0);
            return;
        }
        var p = new GatherSumArgs
        {
            Tokens = tokens, M = m, D = d, RowCount = rowCount,
            WriteRows = dRows is null ? 0 : 1, WriteWeights = dW is null ? 0 : 1,
        };
        // An output that is not wanted is never written; any float view of this device stands in for it.
        var dOutView = F(dOut, op);
        var k = Cached(ref _gatherSumBackward, () => Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<long>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, GatherSumArgs>(IlgpuKernels.WeightedGatherSumBackward));
        k(PairConfig(pairs, d), F(rows, op), L(index, op), F(w, op), dOutView,
            dRows is null ? dOutView : F(dRows, op), dW is null ? dOutView : F(dW, op), p);
    }

    /// <summary>
    /// One group per pair: the smallest power of two ≥ d threads, at least the warp size (a narrower group would
    /// leave the rest of the warp idle) and at most <see cref="GroupSize"/>; one float of shared memory per thread.
    /// </summary>
    private KernelConfig PairConfig(int pairs, int d)
    {
        int size = GroupSize;
        while (size / 2 >= d && size / 2 >= WarpSize) size /= 2;
        return new KernelConfig(new Index1D(pairs), new Index1D(size), SharedMemoryConfig.RequestDynamic<float>(size));
    }
}
