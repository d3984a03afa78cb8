using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>Parameters of the row kernels (softmax, RMSNorm).</summary>
public struct RowArgs
{
    /// <summary>Row length.</summary>
    public int N;
    /// <summary>Number of rows.</summary>
    public int Rows;
    /// <summary>1 for log-softmax.</summary>
    public int Log;
    /// <summary>Causal query length (0: no mask).</summary>
    public int CausalQuery;
    /// <summary>RMSNorm epsilon.</summary>
    public float Eps;
    /// <summary>Rows per chunk of RMSNorm's dw (each thread sums one column over one chunk; <see cref="IlgpuBackend.ChunkRows"/>).</summary>
    public int Chunk;
}

internal static partial class IlgpuKernels
{
    /// <summary>Columns row r reads: all n, or with the causal mask those up to its query's position.</summary>
    private static int ValidColumns(int r, RowArgs p) =>
        p.CausalQuery > 0 ? XMath.Min(p.N, r % p.CausalQuery + p.N - p.CausalQuery + 1) : p.N;

    /// <summary>A masked column's output: 0, or −∞ for log-softmax.</summary>
    private static float MaskedOutput(RowArgs p) => p.Log != 0 ? float.NegativeInfinity : 0f;

    /// <summary>One output of a row with maximum max, Σexp(x − max) = sum and logSum = log(sum).</summary>
    private static float SoftmaxOutput(float x, float max, float sum, float logSum, RowArgs p) =>
        p.Log != 0 ? x - max - logSum : XMath.Exp(x - max) / sum;

    /// <summary>One dx of the backward, given s = Σp·dy (softmax) or Σdy (log-softmax) over the row.</summary>
    private static float SoftmaxInputGradient(float y, float dy, float s, RowArgs p) =>
        p.Log != 0 ? dy - XMath.Exp(y) * s : y * (dy - s);

    /// <summary>Softmax / log-softmax of one row per group (max, Σexp, write), with the optional causal mask.</summary>
    [IlgpuKernel]
    public static void Softmax(ArrayView<float> x, ArrayView<float> y, RowArgs p)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int r = Grid.IdxX, t = Group.IdxX, step = Group.DimX, o = r * p.N;
        int valid = ValidColumns(r, p);
        float max = float.NegativeInfinity;
        for (int j = t; j < valid; j += step) max = XMath.Max(max, x[o + j]);
        max = GroupReduce<MaxReduce>(max, shared);
        float sum = 0f;
        for (int j = t; j < valid; j += step) sum += XMath.Exp(x[o + j] - max);
        sum = GroupReduce<SumReduce>(sum, shared);
        float logSum = XMath.Log(sum);
        for (int j = t; j < p.N; j += step)
            y[o + j] = j >= valid ? MaskedOutput(p) : SoftmaxOutput(x[o + j], max, sum, logSum, p);
    }

    /// <summary>
    /// Softmax backward of one row per group: dx = p(dy − Σp·dy), or dx = dy − p·Σdy for log-softmax; with the causal
    /// mask, masked columns are not read and get dx = 0.
    /// </summary>
    [IlgpuKernel]
    public static void SoftmaxBackward(ArrayView<float> y, ArrayView<float> dy, ArrayView<float> dx, RowArgs p)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int r = Grid.IdxX, t = Group.IdxX, step = Group.DimX, o = r * p.N;
        int valid = ValidColumns(r, p);
        float s = 0f;
        for (int j = t; j < valid; j += step) s += p.Log != 0 ? dy[o + j] : y[o + j] * dy[o + j];
        s = GroupReduce<SumReduce>(s, shared);
        for (int j = t; j < p.N; j += step)
            dx[o + j] = j >= valid ? 0f : SoftmaxInputGradient(y[o + j], dy[o + j], s, p);
    }

    /// <summary>
    /// <see cref="Softmax"/> with one thread per row, for short rows (a router's experts): the same max, Σexp and
    /// write, each a loop over the row.
    /// </summary>
    [IlgpuKernel]
    public static void SoftmaxShortRows(Index1D r, ArrayView<float> x, ArrayView<float> y, RowArgs p)
    {
        int o = r * p.N;
        int valid = ValidColumns(r, p);
        float max = float.NegativeInfinity;
        for (int j = 0; j < valid; j++) max = XMath.Max(max, x[o + j]);
        float sum = 0f;
        for (int j = 0; j < valid; j++) sum += XMath.Exp(x[o + j] - max);
        float logSum = XMath.Log(sum);
        for (int j = 0; j < p.N; j++)
            y[o + j] = j >= valid ? MaskedOutput(p) : SoftmaxOutput(x[o + j], max, sum, logSum, p);
    }

    /// <summary><see cref="SoftmaxBackward"/> with one thread per row, for short rows.</summary>
    [IlgpuKernel]
    public static void SoftmaxBackwardShortRows(Index1D r, ArrayView<float> y, ArrayView<float> dy, ArrayView<float> dx, RowArgs p)
    {
        int o = r * p.N;
        int valid = ValidColumns(r, p);
        float s = 0f;
        for (int j = 0; j < valid; j++) s += p.Log != 0 ? dy[o + j] : y[o + j] * dy[o + j];
        for (int j = 0; j < p.N; j++)
            dx[o + j] = j >= valid ? 0f : SoftmaxInputGradient(y[o + j], dy[o + j], s, p);
    }

    /// <summary>RMSNorm of one row per group; thread 0 saves rstd.</summary>
    [IlgpuKernel]
    public static void RmsNorm(ArrayView<float> x, ArrayView<float> w, ArrayView<float> y, ArrayView<float> rstd, RowArgs p)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int r = Grid.IdxX, t = Group.IdxX, step = Group.DimX, o = r * p.N;
        float ss = 0f;
        for (int j = t; j < p.N; j += step) ss += x[o + j] * x[o + j];
        ss = GroupReduce<SumReduce>(ss, shared);
        float rs = 1f / XMath.Sqrt(ss / p.N + p.Eps);
        if (t == 0) rstd[r] = rs;
        for (int j = t; j < p.N; j += step) y[o + j] = x[o + j] * rs * w[j];
    }

    /// <summary>RMSNorm backward dx of one row per group.</summary>
    [IlgpuKernel]
    public static void RmsNormBackwardDx(ArrayView<float> x, ArrayView<float> w, ArrayView<float> rstd, ArrayView<float> dy, ArrayView<float> dx, RowArgs p)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int r = Grid.IdxX, t = Group.IdxX, step = Group.DimX, o = r * p.N;
        float dot = 0f;
        for (int j = t; j < p.N; j += step) dot += w[j] * dy[o + j] * x[o + j];
        dot = GroupReduce<SumReduce>(dot, shared);
        float rs = rstd[r];
        float coef = rs * rs * rs * dot / p.N;
        for (int j = t; j < p.N; j += step) dx[o + j] = rs * w[j] * dy[o + j] - x[o + j] * coef;
    }

    /// <summary>
    /// RMSNorm backward dw over one chunk of rows: thread e = c·n + j sums column j over rows [c·Chunk, (c+1)·Chunk)
    /// in order into partial[e] (deterministic, no atomics; with one chunk, partial is dw itself).
    /// </summary>
    [IlgpuKernel]
    public static void RmsNormBackwardDw(Index1D e, ArrayView<float> x, ArrayView<float> rstd, ArrayView<float> dy, ArrayView<float> partial, RowArgs p)
    {
        int c = e / p.N, j = e % p.N;
        int end = XMath.Min(p.Rows, (c + 1) * p.Chunk);
        float acc = 0f;
        for (int r = c * p.Chunk; r < end; r++) acc += dy[r * p.N + j] * x[r * p.N + j] * rstd[r];
        partial[e] = acc;
    }
}

public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, RowArgs>? _softmax;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>? _softmaxBackward;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, RowArgs>? _softmaxShortRows;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>? _softmaxBackwardShortRows;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>? _rmsNorm;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>? _rmsNormDx;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>? _rmsNormDw;

    /// <inheritdoc />
    public void Softmax(Storage x, Storage y, int rows, int n, bool log, int causalQuery)
    {
        if (rows == 0 || n == 0) return;
        var p = new RowArgs { N = n, Rows = rows, Log = log ? 1 : 0, CausalQuery = causalQuery };
        // Short rows (a router's experts) one per thread, as in Reduce: a group per row would leave most threads idle.
        if (n <= ShortRow)
        {
            Cached(ref _softmaxShortRows, () => Auto<ArrayView<float>, ArrayView<float>, RowArgs>(IlgpuKernels.SoftmaxShortRows))(
                rows, F(x, "Softmax"), F(y, "Softmax"), p);
            return;
        }
        var k = Cached(ref _softmax, () => Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, RowArgs>(IlgpuKernels.Softmax));
        k(RowConfig(rows), F(x, "Softmax"), F(y, "Softmax"), p);
    }

    /// <inheritdoc />
    public void SoftmaxBackward(Storage y, Storage dy, Storage dx, int rows, int n, bool log, int causalQuery)
    {
        if (rows == 0 || n == 0) return;
        var p = new RowArgs { N = n, Rows = rows, Log = log ? 1 : 0, CausalQuery = causalQuery };
        if (n <= ShortRow)
        {
            Cached(ref _softmaxBackwardShortRows, () => Auto<ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>(IlgpuKernels.SoftmaxBackwardShortRows))(
                rows, F(y, "SoftmaxBackward"), F(dy, "SoftmaxBackward"), F(dx, "SoftmaxBackward"), p);
            return;
        }
        var k = Cached(ref _softmaxBackward, () => Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>(IlgpuKernels.SoftmaxBackward));
        k(RowConfig(rows), F(y, "SoftmaxBackward"), F(dy, "SoftmaxBackward"), F(dx, "SoftmaxBackward"), p);
    }

    /// <inheritdoc />
    public void RmsNorm(Storage x, Storage w, Storage y, Storage rstd, int rows, int n, double eps)
    {
        if (rows == 0) return;
        var k = Cached(ref _rmsNorm, () => Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>(IlgpuKernels.RmsNorm));
        k(RowConfig(rows), F(x, "RmsNorm"), F(w, "RmsNorm"), F(y, "RmsNorm"), F(rstd, "RmsNorm"), new RowArgs { N = n, Rows = rows, Eps = (float)eps });
    }

    /// <inheritdoc />
    public void RmsNormBackward(Storage x, Storage w, Storage rstd, Storage dy, Storage dx, Storage dw, int rows, int n)
    {
        if (n == 0) return;
        var p = new RowArgs { N = n, Rows = rows };
        if (rows > 0)
        {
            var k = Cached(ref _rmsNormDx, () => Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>(IlgpuKernels.RmsNormBackwardDx));
            k(RowConfig(rows), F(x, "RmsNormBackward"), F(w, "RmsNormBackward"), F(rstd, "RmsNormBackward"), F(dy, "RmsNormBackward"), F(dx, "RmsNormBackward"), p);
        }
        // dw sums over all rows: one thread per column looping over thousands of rows would leave the GPU nearly idle
        // and wait on memory at every row, so the rows are cut into about √rows chunks, a thread per (chunk, column),
        // and the chunks' sums are added in order by a column reduction. Chunks depend only on the shape: same bits.
        var kw = Cached(ref _rmsNormDw, () => Auto<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>(IlgpuKernels.RmsNormBackwardDw));
        p.Chunk = ChunkRows(rows);
        int chunks = rows == 0 ? 1 : (rows + p.Chunk - 1) / p.Chunk;
        if (chunks == 1)
        {
            kw(n, F(x, "RmsNormBackward"), F(rstd, "RmsNormBackward"), F(dy, "RmsNormBackward"), F(dw, "RmsNormBackward").SubView(0, n), p);
            return;
        }
        using var partial = AllocateUninitialized(DType.Float32, chunks * n);
        kw(chunks * n, F(x, "RmsNormBackward"), F(rstd, "RmsNormBackward"), F(dy, "RmsNormBackward"), F(partial, "RmsNormBackward"), p);
        Reduce(ReduceOp.Sum, partial, 0, dw, 1, chunks, n);
    }
}
