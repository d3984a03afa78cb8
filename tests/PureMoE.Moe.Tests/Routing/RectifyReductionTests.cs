using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using PureMoE.Moe.Routing;
using static PureMoE.Moe.Tests.Routing.RoutingTestHelpers;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>Logits (ties and extremes included), k and CF for the reduction property.</summary>
public sealed record ReductionCase(LogitsCase Logits, int K, double CapacityFactor, double AuxLossCoeff)
{
    /// <inheritdoc />
    public override string ToString() => $"{Logits}; k={K} CF={CapacityFactor:R} aux={AuxLossCoeff}";
}

/// <summary>Generator of reduction cases (k + 1 ≤ E).</summary>
public static class ReductionArbitraries
{
    /// <summary>A reduction case.</summary>
    public static Arbitrary<ReductionCase> ReductionCase() =>
        (from logits in RoutingGen.Logits()
         from k in RoutingGen.K(logits.Experts - 1, maxK: 3)
         from cf in RoutingGen.CapacityFactor
         from aux in Gen.Elements(0.01, 0.5)
         select new ReductionCase(logits, k, cf, aux)).ToArbitrary();
}

/// <summary>
/// ROUTERS.md §2/§6.4, the authors' own test: top-(k+1) at CF·k/(k+1) with the fill-in choice disabled equals
/// top-k at CF bit for bit — plan (experts, dropped, slots), aux loss, weights and the logits' gradients.
/// </summary>
public class RectifyReductionTests
{
    private sealed record Run(RoutingPlan Plan, double[] Weights, double Aux, double[] LogitsGradient);

    // Routes, then backpropagates L = Σ_t Σ_j w_tj·R_tj + aux with R_tj = R[t, j] (columns beyond R's get weight 1).
    private static Run RouteAndDifferentiate(IRouter router, ReductionCase c, double[] r)
    {
        var logits = c.Logits.Tensor(requiresGrad: true);
        var plan = router.Route(logits, RoutingContext.SingleDevice(c.Logits.Experts));
        int t = plan.Tokens, m = plan.SlotsPerToken;
        var rr = new double[t * m];
        for (int tok = 0; tok < t; tok++)
            for (int j = 0; j < m; j++) rr[tok * m + j] = j < c.K ? r[tok * c.K + j] : 1.0;
        var loss = plan.Weights.Mul(Tensor.FromArray(rr, t, m).To(logits.DType)).Sum().Add(plan.AuxLoss!);
        loss.Backward();
        return new Run(plan, plan.Weights.ToDoubleArray(), plan.AuxLoss!.Item(), logits.Grad!.ToDoubleArray());
    }

    [Property(Arbitrary = [typeof(ReductionArbitraries)], MaxTest = 600)]
    public void FillInRoutingWithoutFillInsEqualsTopKAtTheSameBudget(ReductionCase c)
    {
        int t = c.Logits.Tokens, e = c.Logits.Experts, k = c.K;
        var r = Tensor.Randn(new Shape(t * k), new Rng(c.Logits.Seed)).ToDoubleArray();
        var common = new RectifyOptions { K = k, CapacityFactor = c.CapacityFactor, IntraGpu = false, AuxLossCoeff = c.AuxLossCoeff };
        var topK = RouteAndDifferentiate(new RectifyRouter(e, common with { FillIn = false }), c, r);
        var fillInDisabled = RouteAndDifferentiate(new RectifyRouter(e, common with { FillIn = true, PlaceFillIns = false }), c, r);

        Assert.Equal(k, topK.Plan.SlotsPerToken);
        Assert.Equal(k + 1, fillInDisabled.Plan.SlotsPerToken);
        Assert.Equal(topK.Plan.Capacity, fillInDisabled.Plan.Capacity);
        for (int tok = 0; tok < t; tok++)
        {
            for (int j = 0; j < k; j++)
            {
                int a = tok * k + j, b = tok * (k + 1) + j;
                Assert.Equal(topK.Plan.Expert[a], fillInDisabled.Plan.Expert[b]);
                Assert.Equal(topK.Plan.Dropped[a], fillInDisabled.Plan.Dropped[b]);
                Assert.Equal(topK.Plan.Slot[a], fillInDisabled.Plan.Slot[b]);
                Assert.Equal(topK.Plan.Kind[a], fillInDisabled.Plan.Kind[b]);
                Assert.Equal(BitConverter.DoubleToInt64Bits(topK.Weights[a]), BitConverter.DoubleToInt64Bits(fillInDisabled.Weights[b]));
            }
            int fill = tok * (k + 1) + k;                                   // the disabled fill-in column stays empty
            Assert.Equal(-1, fillInDisabled.Plan.Expert[fill]);
            Assert.Equal(0.0, fillInDisabled.Weights[fill]);
        }
        Assert.Equal(BitConverter.DoubleToInt64Bits(topK.Aux), BitConverter.DoubleToInt64Bits(fillInDisabled.Aux));
        Assert.Equal(Bits(topK.LogitsGradient), Bits(fillInDisabled.LogitsGradient));

        // And Rectify's top-k places pairs and computes aux exactly as TopKRouter (PreSoftmax, Probs) at CF.
        var vanilla = new TopKRouter(e, new TopKOptions
        {
            K = k, Normalization = TopKNormalization.PreSoftmax, CapacityFactor = c.CapacityFactor, AuxLossCoeff = c.AuxLossCoeff,
        }).Route(c.Logits.Tensor(), RoutingContext.SingleDevice(e));
        Assert.Equal(vanilla.Capacity, topK.Plan.Capacity);
        Assert.Equal(vanilla.Expert, topK.Plan.Expert);
        Assert.Equal(vanilla.Dropped, topK.Plan.Dropped);
        Assert.Equal(vanilla.Slot, topK.Plan.Slot);
        Assert.Equal(BitConverter.DoubleToInt64Bits(vanilla.AuxLoss!.Item()), BitConverter.DoubleToInt64Bits(topK.Aux));
    }
}
