using PureMoE.Backends;
using PureMoE.Backends.Cpu;
using PureMoE.Backends.Reference;

namespace PureMoE.Engine.Tests.Backends;

/// <summary>Shared helpers: random buffers, both backends, tolerant comparison.</summary>
internal static class K
{
    public static readonly CpuBackend Cpu = new();
    public static readonly ReferenceBackend Ref = new();

    public static float[] Rand(int n, int seed, float lo = -3, float hi = 3)
    {
        var rng = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = lo + (float)rng.NextDouble() * (hi - lo);
        return a;
    }

    public static double[] RandD(int n, int seed, double lo = -3, double hi = 3)
    {
        var rng = new Random(seed);
        var a = new double[n];
        for (int i = 0; i < n; i++) a[i] = lo + rng.NextDouble() * (hi - lo);
        return a;
    }

    public static CpuStorage S(Array a) => new((Array)a.Clone());

    public static float[] F(Storage s) => ((CpuStorage)s).As<float>();

    /// <summary>Row-major strides of <paramref name="operand"/> aligned to <paramref name="outShape"/>, 0 on broadcast dims.</summary>
    public static int[] BroadcastStrides(int[] operand, int[] outShape)
    {
        int r = outShape.Length, lead = r - operand.Length;
        var st = new int[r];
        int s = 1;
        for (int i = operand.Length - 1; i >= 0; i--)
        {
            st[lead + i] = operand[i] == 1 && outShape[lead + i] != 1 ? 0 : s;
            s *= operand[i];
        }
        return st;
    }

    /// <summary>|a − e| ≤ atol + rtol·|e| elementwise (NaN matches NaN, ±∞ must match exactly).</summary>
    public static void Close(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double rtol, double atol, string what = "")
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            float e = expected[i], a = actual[i];
            if (float.IsNaN(e) && float.IsNaN(a)) continue;
            if (float.IsInfinity(e) || float.IsInfinity(a))
            {
                Assert.True(e == a, $"{what}[{i}]: expected {e}, got {a}");
                continue;
            }
            double tol = atol + rtol * Math.Abs(e);
            Assert.True(Math.Abs(a - e) <= tol, $"{what}[{i}]: expected {e:R}, got {a:R} (tol {tol:G3})");
        }
    }

    public static void Close(ReadOnlySpan<double> expected, ReadOnlySpan<double> actual, double rtol, double atol, string what = "")
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            if (double.IsNaN(e) && double.IsNaN(a)) continue;
            double tol = atol + rtol * Math.Abs(e);
            Assert.True(e == a || Math.Abs(a - e) <= tol, $"{what}[{i}]: expected {e:R}, got {a:R}");
        }
    }

    public static void SameBits(float[] a, float[] b, string what = "")
    {
        Assert.Equal(a.Length, b.Length);
        for (int i = 0; i < a.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(a[i]) == BitConverter.SingleToInt32Bits(b[i]), $"{what}[{i}]: {a[i]:R} vs {b[i]:R}");
    }
}
