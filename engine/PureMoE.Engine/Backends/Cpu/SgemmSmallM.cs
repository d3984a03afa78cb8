using System.Buffers;
using System.Runtime.CompilerServices;

namespace PureMoE.Backends.Cpu;

// Products with a few rows of C over a stored Bᵀ: decoding one token (M = the batch) through every Linear weight
// ([N, K], y = x·Wᵀ) and the attention scores q·Kᵀ of a KV-cached step. The blocked path packs a KC×NC panel of B per
// product and computes 8-row tiles, so at M = 1 it spent 59 % of a decoding profile packing weights it then read
// once, and 7/8 of its multiply-adds on padding. Here each C[i, j] is a dot product of two contiguous rows, B read in
// place, once. The dot's order depends only on K, and the columns of C split across threads whole, so the bits are
// the same for any thread count. (Over a stored B, [K, N], the blocked path stays: its register tiles beat rows of B
// scaled and summed in memory even at M = 2, measured.)
public static partial class Sgemm
{
    /// <summary>Rows of C up to which <see cref="MultiplySmallM"/> replaces the blocked path over a stored Bᵀ.</summary>
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
                DotColumns(in local, rows, rowsOffset, rowStride, j0, j1);
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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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

    // The blocked path's merge: alpha·acc, then one fused beta·C + alpha·acc; C is not read when beta is 0.
    private static float Merge(float acc, ref float c, float alpha, float beta) =>
        beta == 0f ? alpha * acc : MathF.FusedMultiplyAdd(beta, c, alpha * acc);
}
