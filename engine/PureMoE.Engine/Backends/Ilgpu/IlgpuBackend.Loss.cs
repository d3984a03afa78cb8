using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>Parameters of the cross-entropy kernels.</summary>
public struct CrossEntropyArgs
{
    /// <summary>Classes per row.</summary>
    public int N;
    /// <summary>The target value that leaves a row out.</summary>
    public long IgnoreIndex;
}

internal static partial class IlgpuKernels
{
    /// <summary>
    /// Cross-entropy of one row per group: the row's maximum and Σ e^{x − max} by tree reductions (fixed order), then
    /// thread 0 writes log Σ e^x, the loss log Σ e^x − x[target] and whether the row counts.
    /// </summary>
    [IlgpuKernel]
    public static void CrossEntropyRows(ArrayView<float> x, ArrayView<long> targets, ArrayView<float> loss, ArrayView<float> counted,
        ArrayView<float> logSumExp, CrossEntropyArgs p)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int r = Grid.IdxX, t = Group.IdxX, step = Group.DimX, o = r * p.N;
        float max = float.NegativeInfinity;
        for (int j = t; j < p.N; j += step) max = XMath.Max(max, x[o + j]);
        max = GroupReduce<MaxReduce>(max, shared);
        float sum = 0f;
        for (int j = t; j < p.N; j += step) sum += XMath.Exp(x[o + j] - max);
        sum = GroupReduce<SumReduce>(sum, shared);
        if (t != 0) return;
        float lse = max + XMath.Log(sum);
        long target = targets[r];
        bool ignored = target == p.IgnoreIndex;
        float picked = !ignored && target >= 0 && target < p.N ? x[o + (int)target] : 0f;
        logSumExp[r] = lse;
        loss[r] = ignored ? 0f : lse - picked;
        counted[r] = ignored ? 0f : 1f;
    }

    /// <summary>The backward, one thread per logit: dx = g[r]·(e^{x − logSumExp[r]} − [j = target]), 0 in ignored rows.</summary>
    [IlgpuKernel]
    public static void CrossEntropyRowsBackward(Index1D i, ArrayView<float> x, ArrayView<long> targets, ArrayView<float> logSumExp,
        ArrayView<float> g, ArrayView<float> dx, CrossEntropyArgs p)
    {
        int r = i / p.N, j = i % p.N;
        long target = targets[r];
        dx[i] = target == p.IgnoreIndex ? 0f : g[r] * (XMath.Exp(x[i] - logSumExp[r]) - (j == target ? 1f : 0f));
    }
}

public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<float>, CrossEntropyArgs>? _crossEntropyRows;
    private Action<Index1D, ArrayView<float>, ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<float>, CrossEntropyArgs>? _crossEntropyRowsBackward;

    /// <inheritdoc />
    public void CrossEntropyRows(Storage x, Storage targets, long ignoreIndex, Storage loss, Storage counted, Storage logSumExp, int rows, int n)
    {
        const string op = "CrossEntropyRows";
        if (rows == 0) return;
        var k = Cached(ref _crossEntropyRows, () => Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<float>, CrossEntropyArgs>(
            IlgpuKernels.CrossEntropyRows));
        k(RowConfig(rows), F(x, op), L(targets, op), F(loss, op), F(counted, op), F(logSumExp, op), new CrossEntropyArgs { N = n, IgnoreIndex = ignoreIndex });
    }

    /// <inheritdoc />
    public void CrossEntropyRowsBackward(Storage x, Storage targets, long ignoreIndex, Storage logSumExp, Storage g, Storage dx, int rows, int n)
    {
        const string op = "CrossEntropyRowsBackward";
        if (rows == 0 || n == 0) return;
        var k = Cached(ref _crossEntropyRowsBackward, () => Accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<float>, CrossEntropyArgs>(
            IlgpuKernels.CrossEntropyRowsBackward));
        k(rows * n, F(x, op), L(targets, op), F(logSumExp, op), F(g, op), F(dx, op), new CrossEntropyArgs { N = n, IgnoreIndex = ignoreIndex });
    }
}
