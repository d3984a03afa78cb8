using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using PureMoE.Testing;

namespace PureMoE.Engine.Tests.GradCheck;

/// <summary>GroupedSwiGlu and WeightedGatherSum: values against their unfused compositions, gradients against finite differences.</summary>
public class MoeOpsTests
{
    [Property(MaxTest = 30)]
    public Property GroupedSwiGluGradientsMatchFiniteDifferences() => Prop.ForAll(
        Gen.Choose(0, 3).ArrayOf(3).ToArbitrary(),
        Gen.Choose(1, 3).ToArbitrary(),
        Gen.Choose(1, 4).ToArbitrary(),
        (sizes, d, ff) =>
        {
            var rng = new Rng((ulong)(sizes.Sum() * 131 + d * 7 + ff));
            int n = sizes.Sum();
            int g = sizes.Length;
            var x = GradChecker.Randn(new Shape(n, d), rng);
            var w1 = sizes.Select(_ => GradChecker.Randn(new Shape(ff, d), rng)).ToArray();
            var w3 = sizes.Select(_ => GradChecker.Randn(new Shape(ff, d), rng)).ToArray();
            var w2 = sizes.Select(_ => GradChecker.Randn(new Shape(d, ff), rng)).ToArray();
            GradChecker.Check("GroupedSwiGlu",
                t => Tensor.GroupedSwiGlu(t[0], t[1..(1 + g)], t[(1 + g)..(1 + 2 * g)], t[(1 + 2 * g)..], sizes), 5,
                [x, .. w1, .. w3, .. w2]);
        });

    [Fact]
    public void GroupedSwiGluEqualsTheComposition()
    {
        var rng = new Rng(3);
        int[] sizes = [40, 0, 77, 9];
        int d = 24, ff = 40, n = sizes.Sum();
        var x = Tensor.Randn(new Shape(n, d), rng);
        x.RequiresGrad = true;
        Tensor[] W(int o, int i) => sizes.Select(_ => { var w = Tensor.Randn(new Shape(o, i), rng, 0.2); w.RequiresGrad = true; return w; }).ToArray();
        var w1 = W(ff, d);
        var w3 = W(ff, d);
        var w2 = W(d, ff);
        var gy = Tensor.Randn(new Shape(n, d), rng);
        Tensor[] all = [x, .. w1, .. w3, .. w2];

        var fused = Tensor.GroupedSwiGlu(x, w1, w3, w2, sizes);
        fused.Backward(gy);
        var fusedGrads = all.Select(t => t.Grad!.ToArray<float>()).ToArray();
        foreach (var t in all) t.Grad = null;

        var composed = Tensor.GroupedMatMul(Tensor.GroupedMatMul(x, w1, sizes).Silu().Mul(Tensor.GroupedMatMul(x, w3, sizes)), w2, sizes);
        composed.Backward(gy);
        Assert.Equal(composed.ToArray<float>(), fused.ToArray<float>(), new Tol(1e-5f));
        for (int i = 0; i < all.Length; i++) Assert.Equal(all[i].Grad!.ToArray<float>(), fusedGrads[i], new Tol(1e-4f));
    }

    [Property(MaxTest = 30)]
    public Property WeightedGatherSumGradientsMatchFiniteDifferences() => Prop.ForAll(
        Gen.Choose(1, 5).ToArbitrary(),
        Gen.Choose(1, 3).ToArbitrary(),
        Gen.Choose(1, 4).ToArbitrary(),
        (tokens, m, d) =>
        {
            var rng = new Rng((ulong)(tokens * 17 + m * 5 + d));
            int rowCount = tokens * m + 1;
            var perm = Enumerable.Range(0, rowCount).OrderBy(_ => rng.NextInt(1000)).ToArray();
            var ix = Enumerable.Range(0, tokens * m).Select(i => rng.NextInt(4) == 0 ? -1L : perm[i]).ToArray();
            var index = Tensor.FromArray(ix, tokens, m);
            var rows = GradChecker.Randn(new Shape(rowCount, d), rng);
            var w = GradChecker.Randn(new Shape(tokens, m), rng);
            GradChecker.Check("WeightedGatherSum", t => Tensor.WeightedGatherSum(t[0], index, t[1]), 7, [rows, w]);
        });

    [Fact]
    public void WeightedGatherSumEqualsIndexSelectMulIndexAdd()
    {
        var rng = new Rng(5);
        int tokens = 50, m = 2, d = 16;
        var rows = Tensor.Randn(new Shape(tokens * m, d), rng);
        var w = Tensor.Randn(new Shape(tokens, m), rng);
        // Rows of pair i live at row (i * 37) mod (T·m): a permutation.
        var ix = Enumerable.Range(0, tokens * m).Select(i => (long)(i * 37 % (tokens * m))).ToArray();
        var y = Tensor.WeightedGatherSum(rows, Tensor.FromArray(ix, tokens, m), w).ToArray<float>();
        var r = rows.ToArray<float>();
        var wv = w.ToArray<float>();
        for (int t = 0; t < tokens; t++)
            for (int i = 0; i < d; i++)
            {
                float e = 0;
                for (int j = 0; j < m; j++) e += wv[t * m + j] * r[ix[t * m + j] * d + i];
                Assert.Equal(e, y[t * d + i], 1e-5f);
            }
    }

    [Fact]
    public void WeightedGatherSumRejectsARowReadTwice()
    {
        var ex = Assert.Throws<ArgumentException>(() => Tensor.WeightedGatherSum(Tensor.Zeros(new Shape(3, 2)),
            Tensor.FromArray(new long[] { 0, 1, 1, 2 }, 2, 2), Tensor.Zeros(new Shape(2, 2))));
        Assert.Contains("row 1 is read by more than one", ex.Message);
    }

    private sealed class Tol(float tol) : IEqualityComparer<float>
    {
        public bool Equals(float a, float b) => Math.Abs(a - b) <= tol * (1 + Math.Abs(a));
        public int GetHashCode(float f) => 0;
    }
}
