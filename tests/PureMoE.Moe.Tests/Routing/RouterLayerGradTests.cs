using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>
/// Whole MoE layers in float64 with each router configuration: every parameter's gradient (gate and experts) and
/// the input's against central finite differences, with the router's regularisers added to the checked output.
/// Inputs are random normals, so logits stay away from ties (a tie flipped by the step would be a kink).
/// </summary>
public class RouterLayerGradTests
{
    private const int Hidden = 5, Intermediate = 7, Tokens = 9;

    private static void CheckLayer(string what, IRouter router, ulong seed, Parallel.ExpertPlacement? placement = null)
    {
        var layer = new MoeLayer(Hidden, Intermediate, router, new Rng(seed), 0.4, DType.Float64, placement: placement) { SourceDevice = placement is null ? 0 : 1 };
        var x = Tensor.Randn(new Shape(Tokens, Hidden), new Rng(seed + 1), dtype: DType.Float64);
        Tensor Forward()
        {
            var y = layer.Forward(x).Reshape(Tokens * Hidden);
            var regularisers = layer.LastRegularizationLoss;
            return regularisers is null ? y : Tensor.Concat([y, regularisers.Reshape(1)], 0);
        }
        LayerGradCheck.Check(what, layer, Forward, seed + 2, extraInputs: x);
        layer.LastPlan!.Validate();
    }

    public static TheoryData<string, TopKOptions> TopKConfigurations()
    {
        var data = new TheoryData<string, TopKOptions>();
        foreach (var normalization in new[] { TopKNormalization.PreSoftmax, TopKNormalization.PostSoftmax, TopKNormalization.SoftmaxRenorm })
            foreach (double? cf in new double?[] { null, 0.6 })
                data.Add($"{normalization} CF={cf?.ToString() ?? "none"}", new TopKOptions { K = 2, Normalization = normalization, CapacityFactor = cf });
        data.Add("PreSoftmax k=1 CF=0.8 Position padded", new TopKOptions { K = 1, Normalization = TopKNormalization.PreSoftmax, CapacityFactor = 0.8, DropPolicy = DropPolicy.Position, PadToCapacity = true });
        data.Add("SoftmaxRenorm k=3 aux+z CF=1", new TopKOptions { K = 3, CapacityFactor = 1.0, AuxLossCoeff = 0.5, ZLossCoeff = 0.2 });
        data.Add("PostSoftmax k=2 aux+z dropless", new TopKOptions { K = 2, Normalization = TopKNormalization.PostSoftmax, AuxLossCoeff = 0.5, ZLossCoeff = 0.2 });
        return data;
    }

    [Theory]
    [MemberData(nameof(TopKConfigurations))]
    public void TopKLayerGradientsMatchFiniteDifferences(string what, TopKOptions options)
    {
        for (ulong seed = 10; seed < 12; seed++) CheckLayer($"TopK {what}", new TopKRouter(4, options), seed);
    }

    /// <summary>
    /// Straight-through's forward is the constant 1, so finite differences of the layer itself see no gate
    /// gradient by design. Its gradient is checked on a shadow with the same value and the true derivative the
    /// straight-through estimator claims: w(θ) = keep · (1 + g(θ) − g(θ₀)) with g(θ₀) frozen at the checked point.
    /// The shadow passes finite differences, and the straight-through layer's gradients equal the shadow's.
    /// </summary>
    [Theory]
    [InlineData(null)]
    [InlineData(0.8)]
    public void StraightThroughLayerGradientIsThatOfTheProbability(double? capacityFactor)
    {
        var options = new TopKOptions { K = 1, Normalization = TopKNormalization.PreSoftmax, CapacityFactor = capacityFactor };
        for (ulong seed = 10; seed < 12; seed++)
        {
            var x = Tensor.Randn(new Shape(Tokens, Hidden), new Rng(seed + 1), dtype: DType.Float64);
            var straight = new MoeLayer(Hidden, Intermediate, new TopKRouter(4, options with { StraightThroughTop1 = true }), new Rng(seed), 0.4, DType.Float64);
            var probability = new TopKRouter(4, options);
            var frozen = probability.Route(straight.Gate.Forward(x).Detach(), RoutingContext.SingleDevice(4)).Weights.Detach();
            var shadow = new MoeLayer(Hidden, Intermediate, new FrozenPointShadow(probability, frozen), new Rng(seed), 0.4, DType.Float64);
            LayerGradCheck.Check($"straight-through shadow CF={capacityFactor}", shadow, () => shadow.Forward(x), seed + 2, extraInputs: x);

            // Same parameters, same R: the straight-through layer's analytic gradients equal the shadow's.
            var r = Tensor.Randn(new Shape(Tokens, Hidden), new Rng(seed + 3), dtype: DType.Float64);
            double[][] Gradients(MoeLayer layer)
            {
                foreach (var p in layer.Parameters()) { p.RequiresGrad = true; p.ZeroGrad(); }
                layer.Forward(x).Mul(r).Sum().Backward();
                return layer.Parameters().Select(p => p.Grad!.ToDoubleArray()).ToArray();
            }
            var expected = Gradients(shadow);
            var actual = Gradients(straight);
            for (int p = 0; p < expected.Length; p++)
                for (int i = 0; i < expected[p].Length; i++) Assert.Equal(expected[p][i], actual[p][i], 1e-12);
            Assert.All(straight.LastPlan!.Weights.ToDoubleArray().Zip(straight.LastPlan.Dropped), w => Assert.Equal(w.Second ? 0.0 : 1.0, w.First));
        }
    }

    // keep · (1 + g(θ) − g(θ₀)): equal to straight-through's forward at θ₀, with straight-through's gradient as its
    // true derivative. The inner router's weights are g · keep, so this is weights + keep − frozen.
    private sealed class FrozenPointShadow(TopKRouter probability, Tensor frozenWeights) : IRouter
    {
        public string Name => "straight-through-shadow";
        public int Experts => probability.Experts;

        public RoutingPlan Route(Tensor logits, RoutingContext context)
        {
            var plan = probability.Route(logits, context);
            var keep = Tensor.FromArray(plan.Dropped.Select(d => d ? 0.0 : 1.0).ToArray(), plan.Tokens, 1);
            var weights = plan.Weights.Add(keep).Sub(frozenWeights);
            return new RoutingPlan(plan.Tokens, plan.Experts, 1, plan.Expert, weights, plan.Dropped, plan.Slot, plan.Kind, plan.Capacity);
        }
    }

    [Fact]
    public void CapacityConfigurationsDoDropTokens()
    {
        // The capacity cases above are only meaningful if some pairs are dropped there.
        var layer = new MoeLayer(Hidden, Intermediate, new TopKRouter(4, new TopKOptions { K = 2, CapacityFactor = 0.6 }), new Rng(10), 0.4, DType.Float64);
        layer.Forward(Tensor.Randn(new Shape(Tokens, Hidden), new Rng(11), dtype: DType.Float64));
        Assert.True(layer.LastStats!.PairsDropped > 0);
    }

    [Fact]
    public void StraightThroughLayerForwardUsesWeightOne()
    {
        var router = new TopKRouter(4, new TopKOptions { K = 1, Normalization = TopKNormalization.PreSoftmax, StraightThroughTop1 = true });
        var layer = new MoeLayer(Hidden, Intermediate, router, new Rng(3), 0.4, DType.Float64);
        var x = Tensor.Randn(new Shape(Tokens, Hidden), new Rng(4), dtype: DType.Float64);
        var y = layer.Forward(x).ToDoubleArray();
        var plan = layer.LastPlan!;
        Assert.All(plan.Weights.ToDoubleArray(), w => Assert.Equal(1.0, w));
        for (int t = 0; t < Tokens; t++)
        {
            var expected = layer.Experts.List[plan.Expert[t]].Forward(x.Narrow(0, t, 1)).ToDoubleArray();
            for (int c = 0; c < Hidden; c++) Assert.Equal(expected[c], y[t * Hidden + c], 1e-15);
        }
    }

    public static TheoryData<string, RectifyOptions> RectifyConfigurations() => new()
    {
        { "IR only k=1 All", new RectifyOptions { K = 1, CapacityFactor = 0.6, FillIn = false, IntraGpu = true, Unrouted = UnroutedPolicy.All } },
        { "IR only k=2 Any", new RectifyOptions { K = 2, CapacityFactor = 0.6, FillIn = false, IntraGpu = true, Unrouted = UnroutedPolicy.Any } },
        { "FR only k=1 Score", new RectifyOptions { K = 1, CapacityFactor = 0.8, FillIn = true, IntraGpu = false } },
        { "FR only k=2 Top1Gate", new RectifyOptions { K = 2, CapacityFactor = 0.8, FillIn = true, FillPriority = FillPriority.Top1Gate, IntraGpu = false } },
        { "FR+IR paper final", RectifyOptions.PaperFinal with { CapacityFactor = 0.6 } },
        { "FR+IR k=1 All Position aux+z", new RectifyOptions { K = 1, CapacityFactor = 0.6, FillPriority = FillPriority.Position, AuxLossCoeff = 0.5, ZLossCoeff = 0.2 } },
        { "FR+IR k=2 Any aux+z", new RectifyOptions { K = 2, CapacityFactor = 0.6, Unrouted = UnroutedPolicy.Any, AuxLossCoeff = 0.5, ZLossCoeff = 0.2 } },
    };

    /// <summary>
    /// Rectify's denominators are stop-gradient, so its gradient is not the derivative of its forward (which for
    /// k = 1 is the constant 1). The layer is checked with the denominators frozen at the checked point θ₀ —
    /// w = μ·g(θ)/D(θ₀), whose true derivative is the stop-gradient one — and the real router's analytic
    /// gradients must equal the frozen layer's at θ₀.
    /// </summary>
    [Theory]
    [MemberData(nameof(RectifyConfigurations))]
    public void RectifyLayerGradientsMatchFiniteDifferences(string what, RectifyOptions options)
    {
        var placement = Parallel.ExpertPlacement.Contiguous(4, 2);
        for (ulong seed = 10; seed < 12; seed++)
        {
            var x = Tensor.Randn(new Shape(Tokens, Hidden), new Rng(seed + 1), dtype: DType.Float64);
            var router = new RectifyRouter(4, options);
            var layer = new MoeLayer(Hidden, Intermediate, router, new Rng(seed), 0.4, DType.Float64, placement: placement) { SourceDevice = 1 };
            layer.Forward(x);
            var frozen = new RectifyRouter(4, options with { FrozenDenominators = router.LastDenominators });
            CheckLayer($"Rectify {what} (frozen denominators)", frozen, seed, placement);

            var frozenLayer = new MoeLayer(Hidden, Intermediate, frozen, new Rng(seed), 0.4, DType.Float64, placement: placement) { SourceDevice = 1 };
            var r = Tensor.Randn(new Shape(Tokens, Hidden), new Rng(seed + 3), dtype: DType.Float64);
            double[][] Gradients(MoeLayer l)
            {
                foreach (var p in l.Parameters()) { p.RequiresGrad = true; p.ZeroGrad(); }
                var y = l.Forward(x).Mul(r).Sum();
                (l.LastRegularizationLoss is { } reg ? y.Add(reg) : y).Backward();
                return l.Parameters().Select(p => p.Grad!.ToDoubleArray()).ToArray();
            }
            var expected = Gradients(frozenLayer);
            var actual = Gradients(layer);
            for (int p = 0; p < expected.Length; p++)
                for (int i = 0; i < expected[p].Length; i++) Assert.Equal(expected[p][i], actual[p][i], 1e-12);
        }
    }

    [Fact]
    public void RectifyConfigurationsDoRectify()
    {
        // The IR and FR cases above are only meaningful if tokens are dropped, rectified and filled in there.
        var layer = new MoeLayer(Hidden, Intermediate, new RectifyRouter(4, new RectifyOptions { K = 1, CapacityFactor = 0.6 }), new Rng(10), 0.4, DType.Float64,
            placement: Parallel.ExpertPlacement.Contiguous(4, 2));
        layer.Forward(Tensor.Randn(new Shape(Tokens, Hidden), new Rng(11), dtype: DType.Float64));
        Assert.True(layer.LastStats!.PairsDropped > 0);
        Assert.True(layer.LastStats.RectifiedTokens > 0);
        Assert.True(layer.LastStats.FillInsUsed > 0);
    }

    /// <summary>k = 1, IR on: a token dropped by capacity gets exactly E_h(x), h the best expert on its own device.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DroppedTokenOutputIsExactlyTheLocalExpert(bool fillIn)
    {
        var placement = Parallel.ExpertPlacement.Contiguous(4, 2);
        var router = new RectifyRouter(4, new RectifyOptions { K = 1, CapacityFactor = 0.3, FillIn = fillIn, Unrouted = UnroutedPolicy.All });
        var layer = new MoeLayer(Hidden, Intermediate, router, new Rng(21), 0.4, DType.Float64, placement: placement) { SourceDevice = 1 };
        var x = Tensor.Randn(new Shape(Tokens, Hidden), new Rng(22), dtype: DType.Float64);
        var y = layer.Forward(x).ToDoubleArray();
        var plan = layer.LastPlan!;
        int m = plan.SlotsPerToken, checkedTokens = 0;
        for (int t = 0; t < Tokens; t++)
        {
            var rectified = Enumerable.Range(t * m, m).Where(i => plan.Kind[i] == PairKind.Rectified).ToArray();
            if (rectified.Length == 0 || Enumerable.Range(t * m, m).Count(plan.IsKept) != 1) continue;
            int h = plan.Expert[rectified[0]];
            Assert.Equal(1, placement.DeviceOf(h));
            var expected = layer.Experts.List[h].Forward(x.Narrow(0, t, 1)).ToDoubleArray();
            for (int c = 0; c < Hidden; c++) Assert.Equal(expected[c], y[t * Hidden + c]);          // exactly
            checkedTokens++;
        }
        Assert.True(checkedTokens > 0);
    }
}
