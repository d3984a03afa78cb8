using System.Numerics;

namespace PureMoE.Backends.Reference;

public partial class ReferenceBackend
{
    /// <inheritdoc />
    public virtual void Gemm(bool transA, bool transB, int m, int n, int k, double alpha,
        Storage a, int aOffset, int lda, int strideA, Storage b, int bOffset, int ldb, int strideB,
        double beta, Storage c, int cOffset, int ldc, int strideC, int batch)
    {
        // The triple loop lives in GemmReference, the oracle of the fast SGEMM too.
        if (c.DType == DType.Float32)
            Cpu.GemmReference.MultiplyBatched(transA, transB, m, n, k, (float)alpha, A<float>(a), aOffset, lda, strideA,
                A<float>(b), bOffset, ldb, strideB, (float)beta, A<float>(c), cOffset, ldc, strideC, batch);
        else
            Cpu.GemmReference.MultiplyBatched(transA, transB, m, n, k, alpha, A<double>(a), aOffset, lda, strideA,
                A<double>(b), bOffset, ldb, strideB, beta, A<double>(c), cOffset, ldc, strideC, batch);
    }

    /// <inheritdoc />
    public virtual void Softmax(Storage x, Storage y, int rows, int n, bool log, int causalQuery)
    {
        if (x.DType == DType.Float32) SoftmaxT(A<float>(x), A<float>(y), rows, n, log, causalQuery);
        else SoftmaxT(A<double>(x), A<double>(y), rows, n, log, causalQuery);
    }

    /// <summary>Number of unmasked columns of row r (all n unless causal).</summary>
    protected static int ValidColumns(int r, int n, int causalQuery) =>
        causalQuery > 0 ? Math.Min(n, r % causalQuery + n - causalQuery + 1) : n;

    private static void SoftmaxT<T>(T[] x, T[] y, int rows, int n, bool log, int causalQuery)
        where T : IFloatingPointIeee754<T>
    {
        for (int r = 0; r < rows; r++)
        {
            int valid = ValidColumns(r, n, causalQuery), o = r * n;
            T max = T.NegativeInfinity;
            for (int j = 0; j < valid; j++) max = T.Max(max, x[o + j]);
            T sum = T.Zero;
            for (int j = 0; j < valid; j++) sum += T.Exp(x[o + j] - max);
            T logSum = T.Log(sum);
            for (int j = 0; j < n; j++)
            {
                if (j >= valid) y[o + j] = log ? T.NegativeInfinity : T.Zero;
                else y[o + j] = log ? x[o + j] - max - logSum : T.Exp(x[o + j] - max) / sum;
            }
        }
    }

    /// <inheritdoc />
    public virtual void SoftmaxBackward(Storage y, Storage dy, Storage dx, int rows, int n, bool log, int causalQuery)
    {
        if (y.DType == DType.Float32) SoftmaxBackwardT(A<float>(y), A<float>(dy), A<float>(dx), rows, n, log, causalQuery);
        else SoftmaxBackwardT(A<double>(y), A<double>(dy), A<double>(dx), rows, n, log, causalQuery);
    }

    private static void SoftmaxBackwardT<T>(T[] y, T[] dy, T[] dx, int rows, int n, bool log, int causalQuery)
        where T : IFloatingPointIeee754<T>
    {
        for (int r = 0; r < rows; r++)
        {
            int o = r * n, valid = Math.Max(0, ValidColumns(r, n, causalQuery));
            if (log)
            {
                // y = log p: dx = dy − p·Σdy.
                T s = T.Zero;
                for (int j = 0; j < valid; j++) s += dy[o + j];
                for (int j = 0; j < valid; j++) dx[o + j] = dy[o + j] - T.Exp(y[o + j]) * s;
            }
            else
            {
                // y = p: dx = p·(dy − Σ p·dy).
                T s = T.Zero;
                for (int j = 0; j < valid; j++) s += y[o + j] * dy[o + j];
                for (int j = 0; j < valid; j++) dx[o + j] = y[o + j] * (dy[o + j] - s);
            }
            // Masked columns were constants of the forward: no gradient reaches their inputs.
            for (int j = valid; j < n; j++) dx[o + j] = T.Zero;
        }
    }

    /// <inheritdoc />
    public virtual void RmsNorm(Storage x, Storage w, Storage y, Storage rstd, int rows, int n, double eps)
    {
        if (x.DType == DType.Float32) RmsNormT(A<float>(x), A<float>(w), A<float>(y), A<float>(rstd), rows, n, (float)eps);
        else RmsNormT(A<double>(x), A<double>(w), A<double>(y), A<double>(rstd), rows, n, eps);
    }

    private static void RmsNormT<T>(T[] x, T[] w, T[] y, T[] rstd, int rows, int n, T eps)
        where T : IFloatingPointIeee754<T>
    {
        for (int r = 0; r < rows; r++)
        {
            T ss = T.Zero;
            for (int j = 0; j < n; j++) ss += x[r * n + j] * x[r * n + j];
            T rs = T.One / T.Sqrt(ss / T.CreateChecked(n) + eps);
            rstd[r] = rs;
            for (int j = 0; j < n; j++) y[r * n + j] = x[r * n + j] * rs * w[j];
        }
    }

    /// <inheritdoc />
    public virtual void RmsNormBackward(Storage x, Storage w, Storage rstd, Storage dy, Storage dx, Storage dw, int rows, int n)
    {
        if (x.DType == DType.Float32)
            RmsNormBackwardT(A<float>(x), A<float>(w), A<float>(rstd), A<float>(dy), A<float>(dx), A<float>(dw), rows, n);
        else
            RmsNormBackwardT(A<double>(x), A<double>(w), A<double>(rstd), A<double>(dy), A<double>(dx), A<double>(dw), rows, n);
    }

    private static void RmsNormBackwardT<T>(T[] x, T[] w, T[] rstd, T[] dy, T[] dx, T[] dw, int rows, int n)
        where T : IFloatingPointIeee754<T>
    {
        Array.Clear(dw);
        for (int r = 0; r < rows; r++)
        {
            // y = x·r·w with r = (mean x² + eps)^(-1/2):  dx = r·(w·dy) − x·r³/n · Σ_j (w·dy)_j x_j.
            T rs = rstd[r], dot = T.Zero;
            for (int j = 0; j < n; j++) dot += w[j] * dy[r * n + j] * x[r * n + j];
            T coef = rs * rs * rs * dot / T.CreateChecked(n);
            for (int j = 0; j < n; j++)
            {
                dx[r * n + j] = rs * w[j] * dy[r * n + j] - x[r * n + j] * coef;
                dw[j] += dy[r * n + j] * x[r * n + j] * rs;
            }
        }
    }

    /// <summary>Checks an index against its axis length, naming the op.</summary>
    protected static int CheckIndex(long index, int axisLen, string op)
    {
        if ((ulong)index >= (ulong)axisLen)
            throw new IndexOutOfRangeException($"{op}: index {index} is out of range for an axis of length {axisLen}");
        return (int)index;
    }

    /// <inheritdoc />
    public virtual void IndexSelect(Storage src, Storage idx, Storage dst, int outer, int axisLen, int count, int inner)
    {
        var s = ((CpuStorage)src).Data;
        var d = ((CpuStorage)dst).Data;
        long[] ix = A<long>(idx);
        for (int o = 0; o < outer; o++)
            for (int j = 0; j < count; j++)
            {
                int row = CheckIndex(ix[j], axisLen, "IndexSelect");
                Array.Copy(s, (o * axisLen + row) * inner, d, (o * count + j) * inner, inner);
            }
    }

    /// <inheritdoc />
    public virtual void IndexAdd(Storage dst, Storage idx, Storage src, int outer, int axisLen, int count, int inner)
    {
        // int64 too: Concat of ids and counting (index_add of ones) go through this kernel.
        if (dst.DType == DType.Float32) IndexAddT(A<float>(dst), A<long>(idx), A<float>(src), outer, axisLen, count, inner);
        else if (dst.DType == DType.Int64) IndexAddT(A<long>(dst), A<long>(idx), A<long>(src), outer, axisLen, count, inner);
        else IndexAddT(A<double>(dst), A<long>(idx), A<double>(src), outer, axisLen, count, inner);
    }

    private static void IndexAddT<T>(T[] d, long[] ix, T[] s, int outer, int axisLen, int count, int inner)
        where T : INumber<T>
    {
        for (int o = 0; o < outer; o++)
            for (int j = 0; j < count; j++)
            {
                int row = CheckIndex(ix[j], axisLen, "IndexAdd");
                for (int i = 0; i < inner; i++) d[(o * axisLen + row) * inner + i] += s[(o * count + j) * inner + i];
            }
    }

    /// <inheritdoc />
    public virtual void Gather(Storage src, Storage idx, Storage dst, int outer, int axisLen, int count, int inner)
    {
        var s = ((CpuStorage)src).Data;
        var d = ((CpuStorage)dst).Data;
        long[] ix = A<long>(idx);
        for (int o = 0; o < outer; o++)
            for (int j = 0; j < count; j++)
                for (int i = 0; i < inner; i++)
                {
                    int at = (o * count + j) * inner + i;
                    int row = CheckIndex(ix[at], axisLen, "Gather");
                    Array.Copy(s, (o * axisLen + row) * inner + i, d, at, 1);
                }
    }

    /// <inheritdoc />
    public virtual void ScatterAdd(Storage dst, Storage idx, Storage src, int outer, int axisLen, int count, int inner)
    {
        if (dst.DType == DType.Float32) ScatterAddT(A<float>(dst), A<long>(idx), A<float>(src), outer, axisLen, count, inner);
        else if (dst.DType == DType.Int64) ScatterAddT(A<long>(dst), A<long>(idx), A<long>(src), outer, axisLen, count, inner);
        else ScatterAddT(A<double>(dst), A<long>(idx), A<double>(src), outer, axisLen, count, inner);
    }

    private static void ScatterAddT<T>(T[] d, long[] ix, T[] s, int outer, int axisLen, int count, int inner)
        where T : INumber<T>
    {
        for (int o = 0; o < outer; o++)
            for (int j = 0; j < count; j++)
                for (int i = 0; i < inner; i++)
                {
                    int at = (o * count + j) * inner + i;
                    int row = CheckIndex(ix[at], axisLen, "ScatterAdd");
                    d[(o * axisLen + row) * inner + i] += s[at];
                }
    }

    /// <inheritdoc />
    public virtual void TopK(Storage x, Storage values, Storage indices, int rows, int n, int k)
    {
        if (x.DType == DType.Float32) TopKT(A<float>(x), A<float>(values), A<long>(indices), rows, n, k);
        else TopKT(A<double>(x), A<double>(values), A<long>(indices), rows, n, k);
    }

    private static void TopKT<T>(T[] x, T[] values, long[] indices, int rows, int n, int k)
        where T : IFloatingPointIeee754<T>
    {
        var order = new long[n];
        for (int r = 0; r < rows; r++)
        {
            SortRow(x, r * n, n, descending: true, order);
            for (int j = 0; j < k; j++)
            {
                indices[r * k + j] = order[j];
                values[r * k + j] = x[r * n + (int)order[j]];
            }
        }
    }

    /// <inheritdoc />
    public virtual void ArgSort(Storage x, Storage indices, int rows, int n, bool descending)
    {
        var order = new long[n];
        for (int r = 0; r < rows; r++)
        {
            switch (x.DType)
            {
                case DType.Float32: SortRow(A<float>(x), r * n, n, descending, order); break;
                case DType.Float64: SortRow(A<double>(x), r * n, n, descending, order); break;
                default: SortRow(A<long>(x), r * n, n, descending, order); break;
            }
            Array.Copy(order, 0, A<long>(indices), r * n, n);
        }
    }

    // Stable insertion-free sort of indices by value: a merge sort via List.Sort is not stable, so sort
    // (value, index) keys, which makes ties resolve to the lower index. NaN sorts as the largest value (as in PyTorch).
    private static void SortRow<T>(T[] x, int offset, int n, bool descending, long[] order) where T : INumber<T>
    {
        var keys = new int[n];
        for (int j = 0; j < n; j++) keys[j] = j;
        Array.Sort(keys, (p, q) =>
        {
            T a = x[offset + p], b = x[offset + q];
            int c = CompareWithNaNLargest(a, b);
            if (descending) c = -c;
            return c != 0 ? c : p.CompareTo(q);
        });
        for (int j = 0; j < n; j++) order[j] = keys[j];
    }

    private static int CompareWithNaNLargest<T>(T a, T b) where T : INumber<T>
    {
        bool an = T.IsNaN(a), bn = T.IsNaN(b);
        if (an || bn) return an == bn ? 0 : an ? 1 : -1;
        return a < b ? -1 : a > b ? 1 : 0;
    }

    /// <inheritdoc />
    public virtual void Rope(Storage x, RopeLayout xLayout, Storage cos, Storage sin, Storage y, RopeLayout yLayout, int outer, int seq, int dim, bool inverse)
    {
        if (x.DType == DType.Float32) RopeT(A<float>(x), xLayout, A<float>(cos), A<float>(sin), A<float>(y), yLayout, outer, seq, dim, inverse);
        else RopeT(A<double>(x), xLayout, A<double>(cos), A<double>(sin), A<double>(y), yLayout, outer, seq, dim, inverse);
    }

    private static void RopeT<T>(T[] x, RopeLayout xLayout, T[] cos, T[] sin, T[] y, RopeLayout yLayout, int outer, int seq, int dim, bool inverse)
        where T : IFloatingPointIeee754<T>
    {
        int half = dim / 2;
        for (int o = 0; o < outer; o++)
            for (int s = 0; s < seq; s++)
            {
                int xr = xLayout.Row(o, s), yr = yLayout.Row(o, s);
                for (int j = 0; j < half; j++)
                {
                    T c = cos[s * half + j], sn = inverse ? -sin[s * half + j] : sin[s * half + j];
                    T x1 = x[xr + j], x2 = x[xr + half + j];
                    y[yr + j] = x1 * c - x2 * sn;
                    y[yr + half + j] = x2 * c + x1 * sn;
                }
            }
    }

    /// <inheritdoc />
    public virtual void AdamW(Storage param, Storage grad, Storage m, Storage v, int n,
        double lr, double beta1, double beta2, double eps, double weightDecay, double biasCorrection1, double biasCorrection2)
    {
        if (param.DType == DType.Float32)
            AdamWT(A<float>(param), A<float>(grad), A<float>(m), A<float>(v), n, lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2);
        else
            AdamWT(A<double>(param), A<double>(grad), A<double>(m), A<double>(v), n, lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2);
    }

    private static void AdamWT<T>(T[] p, T[] g, T[] m, T[] v, int n, double lr, double b1, double b2, double eps,
        double wd, double bc1, double bc2) where T : IFloatingPointIeee754<T>
    {
        // PyTorch's AdamW: p ← p·(1 − lr·wd); m, v moments; p ← p − lr·m̂/(√v̂ + eps).
        T tb1 = T.CreateChecked(b1), tb2 = T.CreateChecked(b2), decay = T.CreateChecked(1 - lr * wd);
        T stepSize = T.CreateChecked(lr / bc1), sqrtBc2 = T.CreateChecked(Math.Sqrt(bc2)), te = T.CreateChecked(eps);
        for (int i = 0; i < n; i++)
        {
            p[i] *= decay;
            m[i] = tb1 * m[i] + (T.One - tb1) * g[i];
            v[i] = tb2 * v[i] + (T.One - tb2) * g[i] * g[i];
            p[i] -= stepSize * m[i] / (T.Sqrt(v[i]) / sqrtBc2 + te);
        }
    }
}
