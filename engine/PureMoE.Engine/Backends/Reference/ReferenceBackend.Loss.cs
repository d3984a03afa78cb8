using System.Numerics;

namespace PureMoE.Backends.Reference;

// Cross-entropy by rows, the loss of a language model's next-token prediction, forward and backward.
public partial class ReferenceBackend
{
    /// <inheritdoc />
    public virtual void CrossEntropyRows(Storage x, Storage targets, long ignoreIndex, Storage loss, Storage counted, Storage logSumExp, int rows, int n)
    {
        if (x.DType == DType.Float32) CrossEntropyRowsT(A<float>(x), A<long>(targets), ignoreIndex, A<float>(loss), A<float>(counted), A<float>(logSumExp), rows, n);
        else CrossEntropyRowsT(A<double>(x), A<long>(targets), ignoreIndex, A<double>(loss), A<double>(counted), A<double>(logSumExp), rows, n);
    }

    private static void CrossEntropyRowsT<T>(T[] x, long[] targets, long ignoreIndex, T[] loss, T[] counted, T[] logSumExp, int rows, int n)
        where T : IFloatingPointIeee754<T>
    {
        for (int r = 0; r < rows; r++)
        {
            int o = r * n;
            T max = T.NegativeInfinity;
            for (int j = 0; j < n; j++) max = T.Max(max, x[o + j]);
            T sum = T.Zero;
            for (int j = 0; j < n; j++) sum += T.Exp(x[o + j] - max);
            T lse = max + T.Log(sum);
            logSumExp[r] = lse;
            long t = targets[r];
            bool ignored = t == ignoreIndex;
            // A target outside [0, n) reads its logit as 0, as the GPU index kernels do (they check nothing).
            T picked = !ignored && t >= 0 && t < n ? x[o + (int)t] : T.Zero;
            loss[r] = ignored ? T.Zero : lse - picked;
            counted[r] = ignored ? T.Zero : T.One;
        }
    }

    /// <inheritdoc />
    public virtual void CrossEntropyRowsBackward(Storage x, Storage targets, long ignoreIndex, Storage logSumExp, Storage g, Storage dx, int rows, int n)
    {
        if (x.DType == DType.Float32) CrossEntropyRowsBackwardT(A<float>(x), A<long>(targets), ignoreIndex, A<float>(logSumExp), A<float>(g), A<float>(dx), rows, n);
        else CrossEntropyRowsBackwardT(A<double>(x), A<long>(targets), ignoreIndex, A<double>(logSumExp), A<double>(g), A<double>(dx), rows, n);
    }

    private static void CrossEntropyRowsBackwardT<T>(T[] x, long[] targets, long ignoreIndex, T[] logSumExp, T[] g, T[] dx, int rows, int n)
        where T : IFloatingPointIeee754<T>
    {
        for (int r = 0; r < rows; r++)
        {
            long t = targets[r];
            bool ignored = t == ignoreIndex;
            for (int j = 0; j < n; j++)
            {
                int i = r * n + j;
                dx[i] = ignored ? T.Zero : g[r] * (T.Exp(x[i] - logSumExp[r]) - (j == t ? T.One : T.Zero));
            }
        }
    }
}
