using System.Numerics;

namespace PureMoE.Backends.Reference;

// The fused MoE kernels (SwiGLU elementwise part, weighted combine) as plain loops: the oracle for the fast ones.
public partial class ReferenceBackend
{
    /// <inheritdoc />
    public virtual void SwiGlu(Storage gate, Storage up, Storage y, int n)
    {
        if (gate.DType == DType.Float32) SwiGluT(A<float>(gate), A<float>(up), A<float>(y), n);
        else SwiGluT(A<double>(gate), A<double>(up), A<double>(y), n);
    }

    private static void SwiGluT<T>(T[] g, T[] u, T[] y, int n) where T : IFloatingPointIeee754<T>
    {
        for (int i = 0; i < n; i++) y[i] = g[i] / (T.One + T.Exp(-g[i])) * u[i];
    }

    /// <inheritdoc />
    public virtual void SwiGluBackward(Storage gate, Storage up, Storage dy, Storage dGate, Storage dUp, int n)
    {
        if (gate.DType == DType.Float32) SwiGluBackwardT(A<float>(gate), A<float>(up), A<float>(dy), A<float>(dGate), A<float>(dUp), n);
        else SwiGluBackwardT(A<double>(gate), A<double>(up), A<double>(dy), A<double>(dGate), A<double>(dUp), n);
    }

    private static void SwiGluBackwardT<T>(T[] g, T[] u, T[] dy, T[] dg, T[] du, int n) where T : IFloatingPointIeee754<T>
    {
        for (int i = 0; i < n; i++)
        {
            T x = g[i], s = T.One / (T.One + T.Exp(-x)), d = dy[i];
            dg[i] = d * u[i] * (s * (T.One + x * (T.One - s)));
            du[i] = d * (x * s);
        }
    }

    /// <inheritdoc />
    public virtual void WeightedGatherSum(Storage rows, Storage index, Storage w, Storage output, int tokens, int m, int d, int rowCount)
    {
        if (rows.DType == DType.Float32) WeightedGatherSumT(A<float>(rows), A<long>(index), A<float>(w), A<float>(output), tokens, m, d, rowCount);
        else WeightedGatherSumT(A<double>(rows), A<long>(index), A<double>(w), A<double>(output), tokens, m, d, rowCount);
    }

    private static void WeightedGatherSumT<T>(T[] rows, long[] ix, T[] w, T[] o, int tokens, int m, int d, int rowCount)
        where T : IFloatingPointIeee754<T>
    {
        for (int t = 0; t < tokens; t++)
        {
            for (int i = 0; i < d; i++) o[t * d + i] = T.Zero;
            for (int j = 0; j < m; j++)
            {
                long r = ix[t * m + j];
                if (r < 0) continue;
                CheckIndex(r, rowCount, "WeightedGatherSum");
                for (int i = 0; i < d; i++) o[t * d + i] += w[t * m + j] * rows[r * d + i];
            }
        }
    }

    /// <inheritdoc />
    public virtual void WeightedGatherSumBackward(Storage rows, Storage index, Storage w, Storage dOut, Storage? dRows, Storage? dW,
        int tokens, int m, int d, int rowCount)
    {
        if (rows.DType == DType.Float32)
            WeightedGatherSumBackwardT(A<float>(rows), A<long>(index), A<float>(w), A<float>(dOut),
                dRows is null ? null : A<float>(dRows), dW is null ? null : A<float>(dW), tokens, m, d, rowCount);
        else
            WeightedGatherSumBackwardT(A<double>(rows), A<long>(index), A<double>(w), A<double>(dOut),
                dRows is null ? null : A<double>(dRows), dW is null ? null : A<double>(dW), tokens, m, d, rowCount);
    }

    private static void WeightedGatherSumBackwardT<T>(T[] rows, long[] ix, T[] w, T[] g, T[]? dRows, T[]? dW,
        int tokens, int m, int d, int rowCount) where T : IFloatingPointIeee754<T>
    {
        if (dRows is not null) Array.Clear(dRows, 0, rowCount * d);
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < m; j++)
            {
                long r = ix[t * m + j];
                if (dW is not null) dW[t * m + j] = T.Zero;
                if (r < 0) continue;
                CheckIndex(r, rowCount, "WeightedGatherSum");
                T s = T.Zero;
                for (int i = 0; i < d; i++)
                {
                    if (dRows is not null) dRows[r * d + i] = w[t * m + j] * g[t * d + i];
                    s += g[t * d + i] * rows[r * d + i];
                }
                if (dW is not null) dW[t * m + j] = s;
            }
    }
}
