using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Tests;

public class MoeLayerTests
{
    /// <summary>y_t = Σ_(e,w) ∈ plan(t) w · Expert_e(x_t), computed token by token in float64.</summary>
    private static double[] NaiveOutput(MoeLayer layer, Tensor x, RoutingPlan plan)
    {
        int t = plan.Tokens, d = layer.HiddenSize, m = plan.SlotsPerToken;
        var w = plan.Weights.ToDoubleArray();
        var y = new double[t * d];
        for (int tok = 0; tok < t; tok++)
            for (int j = 0; j < m; j++)
            {
                int i = tok * m + j;
                if (!plan.IsKept(i)) continue;
                var expert = layer.Experts.List[plan.Expert[i]];
                var o = expert.Forward(x.Narrow(0, tok, 1)).ToDoubleArray();
                for (int c = 0; c < d; c++) y[tok * d + c] += w[i] * o[c];
            }
        return y;
    }

    [Theory]
    [InlineData(4, 1)]
    [InlineData(4, 2)]
    [InlineData(8, 3)]
    public void SortedGroupedLayerEqualsPerTokenLoop(int experts, int k)
    {
        var layer = new MoeLayer(16, 24, new SoftmaxTopKTestRouter(experts, k), new Rng(3), 0.2, DType.Float64);
        var x = Tensor.Randn(new Shape(13, 16), new Rng(4), dtype: DType.Float64);
        var y = layer.Forward(x).ToDoubleArray();
        var expected = NaiveOutput(layer, x, layer.LastPlan!);
        for (int i = 0; i < y.Length; i++) Assert.Equal(expected[i], y[i], 1e-12);
        Assert.Equal(13 * k, layer.LastStats!.ExpertLoad.Sum());
    }

    [Fact]
    public void ParameterNamesFollowMixtral()
    {
        var layer = new MoeLayer(8, 16, new SoftmaxTopKTestRouter(2, 1), new Rng(1));
        Assert.Equal(new[]
        {
            "gate.weight",
            "experts.0.w1.weight", "experts.0.w2.weight", "experts.0.w3.weight",
            "experts.1.w1.weight", "experts.1.w2.weight", "experts.1.w3.weight",
        }, layer.NamedParameters().Select(p => p.Name));
    }

    [Fact]
    public void PaddedLayoutWithDropsEqualsPerTokenLoop()
    {
        // 5 tokens, 3 experts, k = 1 slot each, capacity 2: expert 0 is chosen by 3 tokens and drops token 4.
        int[] expert = [0, 1, 0, 2, 0];
        bool[] dropped = [false, false, false, false, true];
        int[] slot = [0, 0, 1, 0, -1];
        var router = new FixedPlanRouter(3, expert, dropped, slot, capacity: 2, pad: true, m: 1);
        var layer = new MoeLayer(6, 10, router, new Rng(9), 0.3, DType.Float64);
        var x = Tensor.Randn(new Shape(5, 6), new Rng(2), dtype: DType.Float64);
        var y = layer.Forward(x).ToDoubleArray();
        var expected = NaiveOutput(layer, x, layer.LastPlan!);
        for (int i = 0; i < y.Length; i++) Assert.Equal(expected[i], y[i], 1e-12);
        Assert.All(y.Skip(4 * 6), v => Assert.Equal(0.0, v));        // the dropped token gets 0
        Assert.Equal(2, layer.LastStats!.PaddedSlots);               // capacity 2 · 3 experts − 4 kept
        Assert.Equal(1, layer.LastStats.TokensDropped);
    }

    [Fact]
    public void LayerGradientsMatchFiniteDifferences()
    {
        var layer = new MoeLayer(5, 7, new SoftmaxTopKTestRouter(4, 2), new Rng(5), 0.4, DType.Float64);
        var x = Tensor.Randn(new Shape(6, 5), new Rng(6), dtype: DType.Float64);
        LayerGradCheck.Check("MoeLayer", layer, () => layer.Forward(x), 7, extraInputs: x);
    }
}
