using FsCheck.Xunit;
using PureMoE.Moe.Routing;
using static PureMoE.Moe.Tests.Routing.RoutingTestHelpers;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>ROUTERS.md §6.1–6.2 for TopK, over generated logits (ties and extremes), options and placements.</summary>
public class TopKPropertyTests
{
    private const int Runs = 600;

    // The scores a pair competes with for capacity: the gates before dropping, which are the weights of the same
    // router without capacity (straight-through competes with its probability, i.e. the PreSoftmax gate).
    private static RoutingPlan DroplessTwin(TopKCase c) =>
        new TopKRouter(c.Logits.Experts, c.Options with
        {
            CapacityFactor = null, PadToCapacity = false, StraightThroughTop1 = false,
            Normalization = c.Options.StraightThroughTop1 ? TopKNormalization.PreSoftmax : c.Options.Normalization,
        }).Route(c.Logits.Tensor(), c.Placement.Context());

    /// <summary>§6.1: experts in range, weights finite and ≥ 0, no pair twice, slots unique and inside capacity.</summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = Runs)]
    public void PlanIsWellFormed(TopKCase c)
    {
        var plan = c.Router().Route(c.Logits.Tensor(), c.Placement.Context());
        plan.Validate();
        Assert.Equal(c.Options.K, plan.SlotsPerToken);
        Assert.All(plan.Kind, kind => Assert.Equal(PairKind.Primary, kind));
        Assert.Equal(c.Options.PadToCapacity, plan.PadToCapacity);
        var stats = RoutingStats.From(plan);
        Assert.Equal(c.Logits.Tokens * c.Options.K, stats.PairsChosen);
        Assert.Equal(plan.Dropped.Count(d => d), stats.PairsDropped);
    }

    /// <summary>
    /// §6.2: the chosen experts are the top-k by score (ties: lower index), ≤ k kept pairs per token and exactly k
    /// when dropless, per-expert kept ≤ C = ceil(T·k/E·CF), slots 0… in token order among kept pairs.
    /// </summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = Runs)]
    public void ChoosesTopKAndRespectsCapacity(TopKCase c)
    {
        int t = c.Logits.Tokens, e = c.Logits.Experts, k = c.Options.K;
        var logits = c.Logits.Tensor();
        var plan = c.Router().Route(logits, c.Placement.Context());

        // The choice: the k best of the selection score (logits for PostSoftmax, probabilities otherwise).
        var selection = (c.Options.Normalization == TopKNormalization.PostSoftmax ? logits : logits.Softmax(-1)).ToDoubleArray();
        for (int tok = 0; tok < t; tok++)
            Assert.Equal(Ranking(Row(selection, tok, e)).Take(k), plan.Expert.Skip(tok * k).Take(k));

        for (int tok = 0; tok < t; tok++)
        {
            int kept = Enumerable.Range(tok * k, k).Count(plan.IsKept);
            if (c.Options.CapacityFactor is null) Assert.Equal(k, kept);
            else Assert.InRange(kept, 0, k);
        }
        if (c.Options.CapacityFactor is not double cf)
        {
            Assert.Null(plan.Capacity);
            Assert.All(plan.Dropped, d => Assert.False(d));
            Assert.All(plan.Slot, s => Assert.Equal(-1, s));
            return;
        }
        int capacity = (int)Math.Ceiling((double)t * k / e * cf);
        Assert.Equal(capacity, plan.Capacity);
        Assert.All(plan.KeptPerExpert(), n => Assert.InRange(n, 0, capacity));
        for (int expert = 0; expert < e; expert++)
        {
            // Kept pairs of this expert, in token order, hold slots 0, 1, 2, …
            var slots = Enumerable.Range(0, t * k).Where(i => plan.Expert[i] == expert && plan.IsKept(i)).Select(i => plan.Slot[i]);
            Assert.Equal(Enumerable.Range(0, slots.Count()), slots);
            // An expert drops only when it is full.
            int asked = plan.Expert.Count(x => x == expert);
            Assert.Equal(Math.Min(asked, capacity), plan.KeptPerExpert()[expert]);
        }
    }

    /// <summary>
    /// §6.2 drop policies: with Probs the lowest kept score ≥ the highest dropped score per expert (equal scores:
    /// the lower token kept); with Position the kept pairs are the first in token order. Dropping changes nothing
    /// else: kept weights are those of the dropless router bit for bit, dropped weights are 0 (no renormalisation).
    /// </summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = Runs)]
    public void DropPolicyKeepsTheRightPairsAndRenormalisesNothing(TopKCase c)
    {
        int t = c.Logits.Tokens, e = c.Logits.Experts, k = c.Options.K;
        var plan = c.Router().Route(c.Logits.Tensor(), c.Placement.Context());
        var dropless = DroplessTwin(c);
        double[] score = dropless.Weights.ToDoubleArray(), w = plan.Weights.ToDoubleArray();
        Assert.Equal(dropless.Expert, plan.Expert);

        for (int i = 0; i < t * k; i++)
        {
            if (plan.Dropped[i]) Assert.Equal(0.0, w[i]);
            else if (c.Options.StraightThroughTop1) Assert.Equal(1.0, w[i]);
            else Assert.Equal(BitConverter.DoubleToInt64Bits(score[i]), BitConverter.DoubleToInt64Bits(w[i]));
        }

        for (int expert = 0; expert < e; expert++)
        {
            var pairs = Enumerable.Range(0, t * k).Where(i => plan.Expert[i] == expert).ToArray();   // token order
            var kept = pairs.Where(i => !plan.Dropped[i]).ToArray();
            var dropped = pairs.Where(i => plan.Dropped[i]).ToArray();
            if (dropped.Length == 0) continue;
            if (c.Options.DropPolicy == DropPolicy.Position)
                Assert.Equal(pairs.Take(kept.Length), kept);
            else
                foreach (int lost in dropped)
                    foreach (int won in kept)
                        Assert.True(score[won] > score[lost] || (score[won] == score[lost] && won < lost),
                            $"expert {expert}: kept pair {won} (score {score[won]:R}) vs dropped pair {lost} (score {score[lost]:R})");
        }
    }

    /// <summary>§6.2: PostSoftmax and SoftmaxRenorm weights of an undropped token sum to 1; PreSoftmax's to ≤ 1.</summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = Runs)]
    public void WeightsOfUndroppedTokensSumAsNormalised(TopKCase c)
    {
        int k = c.Options.K;
        var plan = c.Router().Route(c.Logits.Tensor(), c.Placement.Context());
        double[] w = plan.Weights.ToDoubleArray();
        double tolerance = c.Logits.Float64 ? 1e-12 : 1e-6;
        for (int tok = 0; tok < c.Logits.Tokens; tok++)
        {
            if (Enumerable.Range(tok * k, k).Any(i => plan.Dropped[i])) continue;
            double sum = w.Skip(tok * k).Take(k).Sum();
            if (c.Options.StraightThroughTop1) Assert.Equal(1.0, sum);
            else if (c.Options.Normalization == TopKNormalization.PreSoftmax) Assert.True(sum <= 1 + tolerance, $"token {tok}: Σw = {sum:R}");
            else Assert.Equal(1.0, sum, tolerance);
        }
    }

    /// <summary>Evaluation forwards compute no regularisers; training forwards compute exactly the switched-on ones.</summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = 200)]
    public void RegularisersOnlyWhenTrainingAndSwitchedOn(TopKCase c)
    {
        var router = c.Router();
        var training = router.Route(c.Logits.Tensor(), c.Placement.Context());
        var evaluation = router.Route(c.Logits.Tensor(), c.Placement.Context() with { Training = false });
        Assert.Equal(c.Options.AuxLossCoeff > 0, training.AuxLoss is not null);
        Assert.Equal(c.Options.ZLossCoeff > 0, training.ZLoss is not null);
        Assert.Null(evaluation.AuxLoss);
        Assert.Null(evaluation.ZLoss);
        Assert.Equal(training.Expert, evaluation.Expert);
        Assert.Equal(Bits(training.Weights.ToDoubleArray()), Bits(evaluation.Weights.ToDoubleArray()));
    }

    /// <summary>Routing is deterministic: the same logits give the same plan, bit for bit.</summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = 200)]
    public void RoutingIsDeterministic(TopKCase c)
    {
        var a = c.Router().Route(c.Logits.Tensor(), c.Placement.Context());
        var b = c.Router().Route(c.Logits.Tensor(), c.Placement.Context());
        Assert.Equal(a.Expert, b.Expert);
        Assert.Equal(a.Dropped, b.Dropped);
        Assert.Equal(a.Slot, b.Slot);
        Assert.Equal(Bits(a.Weights.ToDoubleArray()), Bits(b.Weights.ToDoubleArray()));
    }
}
