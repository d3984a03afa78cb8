using FsCheck.Xunit;
using PureMoE.Backends.Cpu;

namespace PureMoE.Engine.Tests.Backends;

/// <summary>
/// <see cref="Sgemm"/> against <see cref="GemmReference"/> evaluated in float64.
/// Tolerance, per element: |c − ref| ≤ (k + 4) · ε · (|alpha| · Σₚ |aᵢₚ||bₚⱼ| + |beta| · |c₀|), ε = 2⁻²³,
/// the classical worst-case bound for a float32 dot product of length k plus the alpha/beta roundings.
/// A wrong or missing term is off by ≈ Σ/k, far above this for every size used here.
/// </summary>
public class SgemmTests
{
    private const float Sentinel = 12345.5f;

    public static TheoryData<int, int, int> Sizes => new()
    {
        { 1, 1, 1 }, { 7, 17, 33 }, { 33, 65, 17 }, { 1, 100, 65 }, { 100, 1, 257 }, { 65, 257, 1 },
        { 17, 33, 0 }, { 0, 7, 5 }, { 6, 32, 256 }, { 13, 33, 257 }, { 257, 100, 33 },
        // Large enough to run on both threads: the first splits rows, the second columns.
        { 257, 130, 100 }, { 65, 257, 257 },
        // Row slabs sharing packed B panels: three k-slices and a ragged last column panel; two column panels (NC).
        { 300, 70, 1100 }, { 4100, 4099, 3 },
        // Thin products (n ≤ 32: A read in place by the AVX-512 kernel), with ragged row tiles and k beyond one slice.
        { 41, 8, 700 }, { 250, 32, 600 }, { 300, 24, 33 }, { 1000, 32, 64 },
        // Up to four Nr panels (n ≤ 64 on AVX2): a row-major A is read in place too, a transposed one packed.
        { 250, 48, 600 }, { 1000, 64, 70 },
        // At most four rows of C (over a stored Bᵀ: SgemmSmallM's dot products); the last three split their columns across threads.
        { 2, 300, 513 }, { 4, 5, 3 }, { 1, 4097, 129 }, { 4, 1030, 520 }, { 3, 5000, 64 },
    };

    public static TheoryData<bool, bool> TransposeCombos => new() { { false, false }, { false, true }, { true, false }, { true, true } };

    [Theory]
    [MemberData(nameof(Sizes))]
    public void Matches_reference_for_all_transpose_combinations(int m, int n, int k)
    {
        foreach ((bool ta, bool tb) in new[] { (false, false), (false, true), (true, false), (true, true) })
        {
            var rng = new Random(HashCode.Combine(m, n, k, ta, tb));
            Check(rng, ta, tb, m, n, k, alpha: 1f, beta: 0f, padding: 0, offsets: 0, nanC: false);
            Check(rng, ta, tb, m, n, k, alpha: -1.5f, beta: 0.75f, padding: 3, offsets: 5, nanC: false);
        }
    }

    [Theory]
    [MemberData(nameof(TransposeCombos))]
    public void Beta_zero_overwrites_NaN_filled_C(bool transA, bool transB)
    {
        var rng = new Random(7);
        Check(rng, transA, transB, 33, 65, 17, alpha: 2f, beta: 0f, padding: 1, offsets: 2, nanC: true);
        Check(rng, transA, transB, 7, 1, 100, alpha: 0.5f, beta: 0f, padding: 0, offsets: 0, nanC: true);
    }

    [Theory]
    [InlineData(0f, 0f)]
    [InlineData(0f, 3f)]
    [InlineData(1f, 1f)]
    [InlineData(-2f, -0.5f)]
    public void Alpha_and_beta_are_applied(float alpha, float beta)
    {
        var rng = new Random(11);
        Check(rng, false, true, 17, 33, 65, alpha, beta, padding: 2, offsets: 1, nanC: false);
        Check(rng, true, false, 100, 7, 257, alpha, beta, padding: 0, offsets: 0, nanC: false);
    }

    [Fact]
    public void K_zero_scales_C_by_beta()
    {
        float[] c = [1f, 2f, 3f, 4f];
        Sgemm.Multiply(false, false, 2, 2, 0, 1f, [], 0, 0, [], 0, 2, 0.5f, c, 0, 2);
        Assert.Equal([0.5f, 1f, 1.5f, 2f], c);
        float[] nan = [float.NaN, float.NaN];
        Sgemm.Multiply(true, true, 1, 2, 0, 1f, [], 0, 1, [], 0, 0, 0f, nan, 0, 2);
        Assert.Equal([0f, 0f], nan);
    }

    [Theory]
    [MemberData(nameof(TransposeCombos))]
    public void Batched_matches_per_matrix_reference(bool transA, bool transB)
    {
        var rng = new Random(3);
        foreach ((int m, int n, int k, int batch) in new[] { (7, 17, 33, 5), (65, 33, 100, 3), (1, 1, 1, 1), (100, 100, 64, 2) })
        {
            int aRows = transA ? k : m, aCols = transA ? m : k, bRows = transB ? n : k, bCols = transB ? k : n;
            int lda = aCols + 1, ldb = bCols + 2, ldc = n + 3;
            int strideA = aRows * lda + 4, strideB = bRows * ldb + 1, strideC = m * ldc + 2;
            float[] a = RandomArray(rng, 3 + batch * strideA);
            float[] b = RandomArray(rng, 1 + batch * strideB);
            float[] c = RandomArray(rng, 2 + batch * strideC);
            float[] expected = (float[])c.Clone();
            Sgemm.MultiplyBatched(transA, transB, m, n, k, 1.25f, a, 3, lda, strideA, b, 1, ldb, strideB,
                0.5f, c, 2, ldc, strideC, batch);
            for (int i = 0; i < batch; i++)
            {
                AssertClose(transA, transB, m, n, k, 1.25f, a, 3 + i * strideA, lda, b, 1 + i * strideB, ldb,
                    0.5f, expected, c, 2 + i * strideC, ldc);
            }
        }
    }

    [Fact]
    public void Reference_in_float_agrees_with_reference_in_double()
    {
        var rng = new Random(5);
        float[] a = RandomArray(rng, 9 * 13), b = RandomArray(rng, 13 * 11), c = new float[9 * 11];
        GemmReference.Multiply(false, false, 9, 11, 13, 1f, a, 0, 13, b, 0, 11, 0f, c, 0, 11);
        AssertClose(false, false, 9, 11, 13, 1f, a, 0, 13, b, 0, 11, 0f, new float[c.Length], c, 0, 11);
    }

    [Fact]
    public void Results_are_bitwise_reproducible_and_independent_of_threading()
    {
        const int m = 301, n = 299, k = 1100; // ≈ 99 M multiply-adds: above the parallel threshold; three k-slices
        var rng = new Random(9);
        float[] a = RandomArray(rng, m * k), b = RandomArray(rng, n * k);
        float[] c1 = new float[m * n], c2 = new float[m * n], serial = new float[4 * m * n];
        Sgemm.Multiply(false, true, m, n, k, 1f, a, 0, k, b, 0, k, 0f, c1, 0, n);
        Sgemm.Multiply(false, true, m, n, k, 1f, a, 0, k, b, 0, k, 0f, c2, 0, n);
        Assert.Equal(c1, c2);

        // Row slabs that each pack their own copy of B (the design before the shared panel) give the same bits.
        float[] ownPanels = new float[m * n];
        Sgemm.ShareBPanel = false;
        try
        {
            Sgemm.Multiply(false, true, m, n, k, 1f, a, 0, k, b, 0, k, 0f, ownPanels, 0, n);
        }
        finally
        {
            Sgemm.ShareBPanel = true;
        }

        Assert.Equal(c1, ownPanels);

        // A batch of 4 runs each product on a single thread (parallel over the batch instead).
        Sgemm.MultiplyBatched(false, true, m, n, k, 1f, a, 0, k, 0, b, 0, k, 0, 0f, serial, 0, n, m * n, 4);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(c1, serial.AsSpan(i * m * n, m * n).ToArray());
        }
    }

    [Theory]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void Few_rows_give_the_same_bits_with_columns_split_across_threads_or_not(bool transA, bool transB)
    {
        // 3 × 5000 × 200: above the small-M path's parallel threshold, so one product splits its columns across the
        // threads, while a batch of 4 runs each product whole on one thread.
        const int m = 3, n = 5000, k = 200;
        var rng = new Random(13);
        float[] a = RandomArray(rng, m * k), b = RandomArray(rng, n * k);
        int lda = transA ? m : k, ldb = transB ? k : n;
        float[] whole = new float[m * n], batched = new float[4 * m * n];
        Sgemm.Multiply(transA, transB, m, n, k, 1f, a, 0, lda, b, 0, ldb, 0f, whole, 0, n);
        Sgemm.MultiplyBatched(transA, transB, m, n, k, 1f, a, 0, lda, 0, b, 0, ldb, 0, 0f, batched, 0, n, m * n, 4);
        for (int i = 0; i < 4; i++) Assert.Equal(whole, batched.AsSpan(i * m * n, m * n).ToArray());
    }

    [Fact]
    public void Rejects_operands_that_do_not_fit()
    {
        float[] x = new float[6];
        Assert.Throws<ArgumentException>(() => Sgemm.Multiply(false, false, 2, 2, 2, 1f, x, 3, 2, x, 0, 2, 0f, x, 0, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => Sgemm.Multiply(false, false, 2, 3, 2, 1f, x, 0, 2, x, 0, 2, 0f, x, 0, 3));
    }

    [Property(MaxTest = 60)]
    public void Random_shapes_match_reference(bool transA, bool transB, byte m, byte n, byte k, byte pad, int seed)
    {
        var rng = new Random(seed);
        Check(rng, transA, transB, m % 70, n % 70, k % 90, alpha: 1f, beta: seed % 3 == 0 ? 0f : 0.5f,
            padding: pad % 4, offsets: pad % 5, nanC: seed % 3 == 0);
    }

    /// <summary>Runs one product with padded leading dimensions and offsets, and checks it plus the untouched padding.</summary>
    private static void Check(Random rng, bool transA, bool transB, int m, int n, int k, float alpha, float beta,
        int padding, int offsets, bool nanC)
    {
        int aRows = transA ? k : m, aCols = transA ? m : k, bRows = transB ? n : k, bCols = transB ? k : n;
        int lda = aCols + padding, ldb = bCols + padding + 1, ldc = n + padding;
        float[] a = RandomArray(rng, offsets + aRows * lda);
        float[] b = RandomArray(rng, offsets + bRows * ldb);
        float[] c = new float[offsets + m * ldc + padding];
        Array.Fill(c, Sentinel);
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                c[offsets + i * ldc + j] = nanC ? float.NaN : (float)(rng.NextDouble() * 2 - 1);
            }
        }

        float[] c0 = (float[])c.Clone();
        Sgemm.Multiply(transA, transB, m, n, k, alpha, a, offsets, lda, b, offsets, ldb, beta, c, offsets, ldc);
        AssertClose(transA, transB, m, n, k, alpha, a, offsets, lda, b, offsets, ldb, beta, c0, c, offsets, ldc);

        for (int idx = 0; idx < c.Length; idx++)
        {
            int rel = idx - offsets;
            bool inside = rel >= 0 && rel / ldc < m && rel % ldc < n;
            if (!inside)
            {
                Assert.Equal(Sentinel, c[idx]);
            }
        }
    }

    /// <summary>Checks <paramref name="actual"/> against the float64 reference applied to <paramref name="c0"/>.</summary>
    private static void AssertClose(bool transA, bool transB, int m, int n, int k, float alpha,
        float[] a, int aOffset, int lda, float[] b, int bOffset, int ldb, float beta, float[] c0, float[] actual, int cOffset, int ldc)
    {
        double[] ad = Array.ConvertAll(a, x => (double)x), bd = Array.ConvertAll(b, x => (double)x);
        double[] expected = Array.ConvertAll(c0, x => (double)x);
        GemmReference.Multiply(transA, transB, m, n, k, alpha, ad, aOffset, lda, bd, bOffset, ldb, beta, expected, cOffset, ldc);

        double[] scale = new double[c0.Length];
        GemmReference.Multiply(transA, transB, m, n, k, Math.Abs((double)alpha),
            Array.ConvertAll(ad, Math.Abs), aOffset, lda, Array.ConvertAll(bd, Math.Abs), bOffset, ldb, 0.0, scale, cOffset, ldc);

        double eps = Math.Pow(2, -23);
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                int idx = cOffset + i * ldc + j;
                double cTerm = beta == 0f ? 0 : Math.Abs(beta * (double)c0[idx]);
                double tol = (k + 4) * eps * (scale[idx] + cTerm) + 1e-30;
                double err = Math.Abs(actual[idx] - expected[idx]);
                if (!(err <= tol)) // the message is built only on failure: formatting it per element cost seconds
                {
                    Assert.Fail($"C[{i},{j}] = {actual[idx]} vs {expected[idx]} (err {err:E3} > tol {tol:E3}); m={m} n={n} k={k} tA={transA} tB={transB}");
                }
            }
        }
    }

    private static float[] RandomArray(Random rng, int length)
    {
        var x = new float[length];
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)(rng.NextDouble() * 2 - 1);
        }

        return x;
    }
}
