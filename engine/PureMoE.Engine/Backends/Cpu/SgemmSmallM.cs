using System.Buffers;
using System.Numerics.Tensors;

namespace PureMoE.Backends.Cpu;

// Products with a few rows of C: decoding one token (M = the batch), a KV-cached attention step, an expert that got a
// handful of tokens. The blocked path packs a KC×NC panel of B per product and computes 8-row tiles, so at M = 1 it
// spent 59 % of a decoding profile packing weights it then read once, and 7/8 of its multiply-adds on padding.
// Here B is read in place, once: each C[i, j] of a stored Bᵀ (a Linear weight, [N, K]) is a dot product of two
// contiguous rows, and each row of C over a stored B ([K, N]) is a sum of B's rows scaled by A[i, p], accumulated in
// p order. Both orders depend only on the shape, and the columns of C split across threads whole, so the bits are
// the same for any thread count.
public static partial class Sgemm
{
    /// <summary>Rows of C up to which <see cref="MultiplySmallM"/> replaces the blocked path.</summary>
    internal const int SmallM = 4;

    // From this many multiply-adds (B of 1 MiB at M = 1) the columns of C are split across threads.
    private const long SmallMParallelThreshold = 1L << 18;

    private static void MultiplySmallM(in Problem g, bool allowParallel)
    {
        // Rows of op(A), contiguous: in place when A is row-major, gathered when it is stored transposed ([K, M]).
        float[]? gathered = null;
        float[] rows = g.A;
        int rowsOffset = g.AOffset, rowStride = g.Lda;
        if (g.TransA)
        {
            gathered = ArrayPool<float>.Shared.Rent(g.M * g.K);
            for (int i = 0; i < g.M; i++)
                for (int p = 0; p < g.K; p++)
                    gathered[i * g.K + p] = g.A[g.AOffset + p * g.Lda + i];
            (rows, rowsOffset, rowStride) = (gathered, 0, g.K);
        }
        try
        {
            int threads = allowParallel ? Environment.ProcessorCount : 1;
            int chunks = (long)g.M * g.N * g.K >= SmallMParallelThreshold ? Math.Min(threads, (g.N + 63) / 64) : 1;
            var local = g;
            void Columns(int chunk)
            {
                int j0 = (int)((long)local.N * chunk / chunks), j1 = (int)((long)local.N * (chunk + 1) / chunks);
                if (local.TransB) DotColumns(in local, rows, rowsOffset, rowStride, j0, j1);
                else AxpyColumns(in local, rows, rowsOffset, rowStride, j0, j1);
            }
            if (chunks <= 1) Columns(0);
            else Parallel.For(0, chunks, Columns);
        }
        finally
        {
            if (gathered is not null) ArrayPool<float>.Shared.Return(gathered);
        }
    }

    // C[i, j] for j in [j0, j1) over a stored Bᵀ: the dot product of A's row i and B's row j.
    private static void DotColumns(in Problem g, float[] rows, int rowsOffset, int rowStride, int j0, int j1)
    {
        for (int j = j0; j < j1; j++)
        {
            ReadOnlySpan<float> b = g.B.AsSpan(g.BOffset + j * g.Ldb, g.K);
            for (int i = 0; i < g.M; i++)
            {
                float dot = Simd.Dot(rows.AsSpan(rowsOffset + i * rowStride, g.K), b);
                ref float c = ref g.C[g.COffset + i * g.Ldc + j];
                c = Merge(dot, ref c, g.Alpha, g.Beta);
            }
        }
    }

    // C[i, j0..j1) over a stored B: Σ_p A[i, p]·B[p, j0..j1), the rows of B taken in order, each read once for all rows of C.
    private static void AxpyColumns(in Problem g, float[] rows, int rowsOffset, int rowStride, int j0, int j1)
    {
        int width = j1 - j0;
        float[] acc = ArrayPool<float>.Shared.Rent(g.M * width);
        try
        {
            acc.AsSpan(0, g.M * width).Clear();
            for (int p = 0; p < g.K; p++)
            {
                ReadOnlySpan<float> b = g.B.AsSpan(g.BOffset + p * g.Ldb + j0, width);
                for (int i = 0; i < g.M; i++)
                {
                    Span<float> sum = acc.AsSpan(i * width, width);
                    TensorPrimitives.MultiplyAdd(b, rows[rowsOffset + i * rowStride + p], sum, sum);
                }
            }
            for (int i = 0; i < g.M; i++)
                for (int j = 0; j < width; j++)
                {
                    ref float c = ref g.C[g.COffset + i * g.Ldc + j0 + j];
                    c = Merge(acc[i * width + j], ref c, g.Alpha, g.Beta);
                }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(acc);
        }
    }

    // The blocked path's merge: alpha·acc, then one fused beta·C + alpha·acc; C is not read when beta is 0.
    private static float Merge(float acc, ref float c, float alpha, float beta) =>
        beta == 0f ? alpha * acc : MathF.FusedMultiplyAdd(beta, c, alpha * acc);
}
