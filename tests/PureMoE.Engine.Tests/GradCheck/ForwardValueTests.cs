using FsCheck.Xunit;
using PureMoE.Testing;

namespace PureMoE.Engine.Tests.GradCheck;

/// <summary>Forwards of the non-obvious ops against hand-written float64 computations.</summary>
public class ForwardValueTests
{
    public static TheoryData<bool> Devices => new() { false, true };
    private static Device Dev(bool reference) => reference ? Device.CpuReference : Device.Cpu;

    [Theory]
    [MemberData(nameof(Devices))]
    public void CausalSoftmaxMasksAndNormalisesEachQueryRow(bool reference)
    {
        // scores [2 batches, q=3, k=5]: query i sees keys j ≤ i + 5 − 3.
        int q = 3, k = 5;
        var x = GradChecker.Randn(new Shape(2, q, k), new Rng(1), 2, Dev(reference));
        var y = x.CausalSoftmax(q).ToDoubleArray();
        var xv = x.ToDoubleArray();
        for (int b = 0; b < 2; b++)
            for (int i = 0; i < q; i++)
            {
                int row = (b * q + i) * k, last = i + k - q;
                double sum = 0;
                for (int j = 0; j <= last; j++) sum += Math.Exp(xv[row + j]);
                for (int j = 0; j < k; j++)
                {
                    if (j > last) Assert.Equal(0.0, y[row + j]);
                    else Assert.Equal(Math.Exp(xv[row + j]) / sum, y[row + j], 1e-14);
                }
            }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void SoftmaxAndLogSoftmaxAlongAMiddleAxis(bool reference)
    {
        var x = GradChecker.Randn(new Shape(2, 3, 4), new Rng(2), 3, Dev(reference));
        var p = x.Softmax(1).ToDoubleArray();
        var lp = x.LogSoftmax(1).ToDoubleArray();
        var xv = x.ToDoubleArray();
        for (int a = 0; a < 2; a++)
            for (int c = 0; c < 4; c++)
            {
                double sum = 0;
                for (int j = 0; j < 3; j++) sum += Math.Exp(xv[(a * 3 + j) * 4 + c]);
                for (int j = 0; j < 3; j++)
                {
                    int at = (a * 3 + j) * 4 + c;
                    Assert.Equal(Math.Exp(xv[at]) / sum, p[at], 1e-14);
                    Assert.Equal(xv[at] - Math.Log(sum), lp[at], 1e-13);
                }
            }
    }

    [Fact]
    public void SoftmaxIsStableForLargeInputs()
    {
        var x = Tensor.FromArray(new double[] { 1000, 1001, 999, -1000 }, 4);
        var p = x.Softmax().ToDoubleArray();
        Assert.All(p, v => Assert.True(double.IsFinite(v)));
        Assert.Equal(1.0, p.Sum(), 1e-15);
        Assert.Equal(Math.Log(Math.Exp(0) + Math.Exp(1) + Math.Exp(-1) + Math.Exp(-2001)) + 1000, x.LogSumExp().Item(), 1e-12);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void CrossEntropyIsMinusMeanLogSoftmaxOfCountedRows(AxisCase c)
    {
        var rng = c.Rng();
        var logits = GradChecker.Randn(c.Shape, rng, 2, c.Device);
        int classes = c.Dims[^1], rows = c.Shape.Numel / classes;
        var t = new long[rows];
        for (int i = 0; i < rows; i++) t[i] = rng.NextDouble() < 0.3 ? -100 : rng.NextInt(classes);
        double loss = logits.CrossEntropy(Tensor.FromHost(t, c.Dims[..^1], c.Device)).Item();
        var x = logits.ToDoubleArray();
        double sum = 0;
        int counted = 0;
        for (int r = 0; r < rows; r++)
        {
            if (t[r] == -100) continue;
            double lse = Math.Log(Enumerable.Range(0, classes).Sum(j => Math.Exp(x[r * classes + j])));
            sum += -(x[r * classes + t[r]] - lse);
            counted++;
        }
        Assert.Equal(counted == 0 ? 0 : sum / counted, loss, 1e-12);
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void RmsNormMatchesTheFormula(bool reference)
    {
        var x = GradChecker.Randn(new Shape(3, 5), new Rng(4), device: Dev(reference));
        var w = GradChecker.Randn(new Shape(5), new Rng(5), device: Dev(reference));
        const double eps = 1e-5;
        var y = x.RmsNorm(w, eps).ToDoubleArray();
        var xv = x.ToDoubleArray();
        var wv = w.ToDoubleArray();
        for (int r = 0; r < 3; r++)
        {
            double ms = 0;
            for (int j = 0; j < 5; j++) ms += xv[r * 5 + j] * xv[r * 5 + j];
            double rs = 1 / Math.Sqrt(ms / 5 + eps);
            for (int j = 0; j < 5; j++) Assert.Equal(xv[r * 5 + j] * rs * wv[j], y[r * 5 + j], 1e-14);
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void TopKBreaksTiesTowardsTheLowerIndex(bool reference)
    {
        var x = Tensor.FromHost(new double[] { 1, 3, 2, 3, 1, 3, /* row 2 */ 5, 5, 5, 0, 5, 1 }, [2, 6], Dev(reference));
        var (values, indices) = x.TopK(4);
        Assert.Equal(new double[] { 3, 3, 3, 2, 5, 5, 5, 5 }, values.ToDoubleArray());
        Assert.Equal(new long[] { 1, 3, 5, 2, 0, 1, 2, 4 }, indices.ToLongArray());
        var (v32, i32) = x.To(DType.Float32).TopK(2);
        Assert.Equal(new float[] { 3, 3, 5, 5 }, v32.ToArray<float>());
        Assert.Equal(new long[] { 1, 3, 0, 1 }, i32.ToLongArray());
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ArgSortIsStableBothWays(bool reference)
    {
        var x = Tensor.FromHost(new double[] { 2, 1, 2, 0, 1, 2, 0 }, [7], Dev(reference));
        Assert.Equal(new long[] { 3, 6, 1, 4, 0, 2, 5 }, x.ArgSort().ToLongArray());
        Assert.Equal(new long[] { 0, 2, 5, 1, 4, 3, 6 }, x.ArgSort(descending: true).ToLongArray());
        // int64 keys and several rows; a long row checks stability beyond small-array special cases.
        var ids = Tensor.FromHost(new long[] { 3, 1, 3, 1, /* */ 0, 0, 0, 0 }, [2, 4], Dev(reference));
        Assert.Equal(new long[] { 1, 3, 0, 2, 0, 1, 2, 3 }, ids.ArgSort().ToLongArray());
        Assert.Equal(new long[] { 0, 2, 1, 3, 0, 1, 2, 3 }, ids.ArgSort(descending: true).ToLongArray());
        int n = 200;
        var keys = new double[n];
        for (int i = 0; i < n; i++) keys[i] = i % 3;
        var order = Tensor.FromHost(keys, [n], Dev(reference)).ArgSort().ToLongArray();
        var expected = Enumerable.Range(0, n).OrderBy(i => i % 3).Select(i => (long)i).ToArray();
        Assert.Equal(expected, order);
        var orderDesc = Tensor.FromHost(keys, [n], Dev(reference)).ArgSort(descending: true).ToLongArray();
        Assert.Equal(Enumerable.Range(0, n).OrderByDescending(i => i % 3).Select(i => (long)i).ToArray(), orderDesc);
    }

    [Fact]
    public void ArgSortPutsNaNLast()
    {
        var x = Tensor.FromArray(new double[] { 1, double.NaN, 0 }, 3);
        Assert.Equal(new long[] { 2, 0, 1 }, x.ArgSort().ToLongArray());
    }

    [Fact]
    public void MaxBackwardSharesTiedMaximaEqually()
    {
        var x = Tensor.FromArray(new double[] { 1, 3, 3, 2 }, 4);
        x.RequiresGrad = true;
        x.Max(0).Backward();
        Assert.Equal(new[] { 0, 0.5, 0.5, 0 }, x.Grad!.ToDoubleArray());
    }

    [Fact]
    public void GatherScatterIndexAddValues()
    {
        var x = Tensor.FromArray(new double[] { 1, 2, 3, 4, 5, 6 }, 2, 3);
        var idx = Tensor.FromArray(new long[] { 2, 0, 1, 1 }, 2, 2);
        Assert.Equal(new double[] { 3, 1, 5, 5 }, x.Gather(1, idx).ToDoubleArray());
        var src = Tensor.FromArray(new double[] { 10, 20, 30, 40 }, 2, 2);
        Assert.Equal(new double[] { 21, 2, 13, 4, 75, 6 }, x.ScatterAdd(1, idx, src).ToDoubleArray());
        var rows = Tensor.FromArray(new long[] { 1, 1, 0 }, 3);
        var src2 = Tensor.FromArray(new double[] { 1, 1, 1, 2, 2, 2, 3, 3, 3 }, 3, 3);
        Assert.Equal(new double[] { 4, 5, 6, 7, 8, 9 }, x.IndexAdd(0, rows, src2).ToDoubleArray());
        Assert.Equal(new double[] { 4, 5, 6, 4, 5, 6, 1, 2, 3 }, x.IndexSelect(0, rows).ToDoubleArray());
    }
}
