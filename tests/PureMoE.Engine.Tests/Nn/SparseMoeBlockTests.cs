using PureMoE.Models;

namespace PureMoE.Engine.Tests.Nn;

public class SparseMoeBlockTests
{
    private static double[] MatVec(double[] w, int rows, int cols, double[] x)
    {
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) y[r] += w[r * cols + c] * x[c];
        return y;
    }

    /// <summary>The Hugging Face algorithm one token at a time, in plain float64 loops.</summary>
    private static double[] NaiveMoe(SparseMoeBlock moe, double[] x, int tokens, int d, int ff)
    {
        int e = moe.NumExperts, k = moe.TopK;
        var gate = moe.Gate.Weight.ToDoubleArray();
        var w1 = moe.Experts.Select(m => m.W1.Weight.ToDoubleArray()).ToArray();
        var w2 = moe.Experts.Select(m => m.W2.Weight.ToDoubleArray()).ToArray();
        var w3 = moe.Experts.Select(m => m.W3.Weight.ToDoubleArray()).ToArray();
        var output = new double[tokens * d];
        for (int t = 0; t < tokens; t++)
        {
            var xt = x.AsSpan(t * d, d).ToArray();
            var logits = MatVec(gate, e, d, xt);
            double max = logits.Max();
            var probs = logits.Select(l => Math.Exp(l - max)).ToArray();
            double sum = probs.Sum();
            for (int j = 0; j < e; j++) probs[j] /= sum;
            var top = Enumerable.Range(0, e).OrderByDescending(j => probs[j]).ThenBy(j => j).Take(k).ToArray();
            double topSum = top.Sum(j => probs[j]);
            foreach (int j in top)
            {
                var a = MatVec(w1[j], ff, d, xt);
                var b = MatVec(w3[j], ff, d, xt);
                var h = a.Select((v, i) => v / (1 + Math.Exp(-v)) * b[i]).ToArray();
                var y = MatVec(w2[j], d, ff, h);
                for (int i = 0; i < d; i++) output[t * d + i] += probs[j] / topSum * y[i];
            }
        }
        return output;
    }

    [Theory]
    [InlineData(4, 2)]
    [InlineData(8, 2)]
    [InlineData(4, 1)]
    [InlineData(3, 3)]
    public void MatchesNaivePerTokenLoopInFloat64(int experts, int topK)
    {
        const int d = 16, ff = 24, b = 3, s = 5;
        var rng = new Rng(11);
        // A larger init std than 0.02 so the router's choices are well separated and all experts see tokens.
        var moe = new SparseMoeBlock(d, ff, experts, topK, rng, initStd: 0.3);
        moe.To(DType.Float64);
        var x = Tensor.Randn(new Shape(b, s, d), rng, dtype: DType.Float64);
        var y = moe.Forward(x);
        Assert.Equal(x.Shape, y.Shape);
        var expected = NaiveMoe(moe, x.ToDoubleArray(), b * s, d, ff);
        Assert.True(TinyConfigs.MaxAbsDiff(expected, y.ToDoubleArray()) < 1e-12);
    }

    [Fact]
    public void GradientReachesGateAndMatchesFiniteDifferences()
    {
        const int d = 8, ff = 12;
        var rng = new Rng(5);
        var moe = new SparseMoeBlock(d, ff, 4, 2, rng, initStd: 0.3);
        moe.To(DType.Float64);
        var x = Tensor.Randn(new Shape(6, d), rng, dtype: DType.Float64);
        var probe = Tensor.Randn(new Shape(6, d), rng, dtype: DType.Float64);   // loss = Σ y·probe
        double Loss() { using (Tensor.NoGrad()) return moe.Forward(x).Mul(probe).Sum().Item(); }

        moe.Forward(x).Mul(probe).Sum().Backward();
        var gate = moe.Gate.Weight;
        var grad = gate.Grad!.ToDoubleArray();
        Assert.Contains(grad, g => Math.Abs(g) > 1e-6);

        // Central differences on every gate entry (steps small enough not to change the top-k choice).
        var w = gate.ToDoubleArray();
        const double h = 1e-6;
        for (int i = 0; i < w.Length; i++)
        {
            var plus = (double[])w.Clone(); plus[i] += h;
            var minus = (double[])w.Clone(); minus[i] -= h;
            gate.CopyFrom(Tensor.FromArray(plus, gate.Shape.ToArray()));
            double lp = Loss();
            gate.CopyFrom(Tensor.FromArray(minus, gate.Shape.ToArray()));
            double lm = Loss();
            Assert.Equal((lp - lm) / (2 * h), grad[i], 6);
        }
        gate.CopyFrom(Tensor.FromArray(w, gate.Shape.ToArray()));
        Assert.All(moe.Experts, e => Assert.NotNull(e.W2.Weight.Grad));
    }
}
