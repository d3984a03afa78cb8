using PureMoE.Backends;

namespace PureMoE.Engine.Tests.Backends;

/// <summary>
/// The CPU backend's top-k by selection passes against the reference's sort of each row: the same indices and the
/// same value bits, with ties, NaNs and both zeros in the rows, float32 and float64, rows split over threads.
/// </summary>
public class CpuTopKTests
{
    /// <summary>Rows drawn from a few values, so ties are common, with NaN, −0 and +0 among them.</summary>
    private static double[] Rows(int count, int seed)
    {
        var r = new Random(seed);
        double[] pool = [double.NaN, -0.0, 0.0, 1.5, -2.0, 3.25, 1.5, double.NegativeInfinity, double.PositiveInfinity];
        return Enumerable.Range(0, count).Select(_ => r.Next(3) == 0 ? r.NextDouble() * 4 - 2 : pool[r.Next(pool.Length)]).ToArray();
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(5, 8, 2)]
    [InlineData(7, 8, 8)]
    [InlineData(3, 65, 4)]
    [InlineData(4096, 8, 2)]    // a router's shape: rows split over threads
    [InlineData(100, 64, 16)]   // the largest k by selection
    [InlineData(6, 40, 17)]     // beyond it: the reference's sort
    public void MatchesTheReferenceIndexForIndex(int rows, int n, int k)
    {
        var xd = Rows(rows * n, rows + n + k);
        var xf = xd.Select(v => (float)v).ToArray();
        foreach (var x in new Array[] { xf, xd })
        {
            var (ve, ie) = (K.S(Array.CreateInstance(x.GetType().GetElementType()!, rows * k)), K.S(new long[rows * k]));
            var (va, ia) = (K.S(Array.CreateInstance(x.GetType().GetElementType()!, rows * k)), K.S(new long[rows * k]));
            K.Ref.TopK(K.S(x), ve, ie, rows, n, k);
            K.Cpu.TopK(K.S(x), va, ia, rows, n, k);
            string what = $"{x.GetType().GetElementType()!.Name} rows={rows} n={n} k={k}";
            Assert.True(ie.As<long>().SequenceEqual(ia.As<long>()), what + " indices");
            if (x is float[]) K.SameBits(K.F(ve), K.F(va), what + " values");
            else Assert.True(ve.As<double>().Select(BitConverter.DoubleToInt64Bits).SequenceEqual(va.As<double>().Select(BitConverter.DoubleToInt64Bits)), what + " values");
        }
    }

    [Fact]
    public void AllNaNsAndBothZerosAreTiesInIndexOrder()
    {
        float[] x = [float.NaN, -0f, 0f, float.NaN, 0f, -0f];
        var (v, i) = (K.S(new float[6]), K.S(new long[6]));
        K.Cpu.TopK(K.S(x), v, i, 1, 6, 6);
        Assert.Equal([0L, 3, 1, 2, 4, 5], i.As<long>());
    }
}
