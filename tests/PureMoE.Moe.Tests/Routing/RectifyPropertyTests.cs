using FsCheck.Xunit;
using PureMoE.Moe.Routing;
using static PureMoE.Moe.Tests.Routing.RoutingTestHelpers;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>ROUTERS.md §6.1 and §6.4 for Rectify, over generated logits, options and placements.</summary>
public class RectifyPropertyTests
{
    private const int Runs = 500;

    private sealed record Routed(RectifyCase Case, RoutingPlan Plan, double[] Probabilities)
    {
        public int K => Case.Options.K;
        public int Choices => K + (Case.Options.FillIn ? 1 : 0);
        public int Columns => Plan.SlotsPerToken;
        public int Experts => Case.Logits.Experts;
        public IEnumerable<int> PairsOf(int token) => Enumerable.Range(token * Columns, Columns);
        public int KeptChoices(int token) => PairsOf(token).Count(i => Plan.IsKept(i) && Plan.Kind[i] != PairKind.Rectified);
    }

    // Vanilla TopK (pre-softmax weights) at the case's k and capacity factor: Rectify's first choices are placed as it places them.
    private static RoutingPlan TopKAtTheSameCapacity(RectifyCase c) =>
        new TopKRouter(c.Logits.Experts, new TopKOptions { K = c.Options.K, Normalization = TopKNormalization.PreSoftmax, CapacityFactor = c.Options.CapacityFactor })
            .Route(c.Logits.Tensor(), c.Placement.Context());

    private static Routed Route(RectifyCase c)
    {
        var logits = c.Logits.Tensor();
        return new Routed(c, c.Router().Route(logits, c.Placement.Context()), logits.Softmax(-1).ToDoubleArray());
    }

    /// <summary>§6.1: the plan is well formed (experts in range, weights finite ≥ 0, no pair twice, slots in capacity).</summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = Runs)]
    public void PlanIsWellFormed(RectifyCase c)
    {
        var r = Route(c);
        r.Plan.Validate();
        Assert.Equal(r.Choices + (c.Options.IntraGpu ? 1 : 0), r.Columns);
        Assert.Equal((int)Math.Ceiling((double)c.Logits.Tokens * r.K / r.Experts * c.Options.CapacityFactor), r.Plan.Capacity);
        for (int t = 0; t < c.Logits.Tokens; t++)
            for (int j = 0; j < r.Columns; j++)
            {
                var kind = r.Plan.Kind[t * r.Columns + j];
                // First choices in columns < k, the fill-in in column k, rectified pairs anywhere IR put them.
                var allowed = j < r.K ? new[] { PairKind.Primary, PairKind.Rectified }
                    : j < r.Choices ? [PairKind.FillIn, PairKind.Rectified]
                    : [PairKind.None, PairKind.Rectified];
                Assert.Contains(kind, allowed);
            }
        var stats = RoutingStats.From(r.Plan);
        Assert.Equal(r.Plan.Kind.Count(k => k == PairKind.FillIn) - Enumerable.Range(0, r.Plan.Expert.Length)
            .Count(i => r.Plan.Kind[i] == PairKind.FillIn && r.Plan.Dropped[i]), stats.FillInsUsed);
    }

    /// <summary>
    /// Statistics count drops over the first k columns only: every token chose k pairs, a first choice is dropped
    /// when capacity left it out and IR did not take it over in place, and a fill-in candidate that found no spare
    /// capacity is counted as a candidate, never as a drop. Without IR the drops are TopK's at the same capacity.
    /// </summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = Runs)]
    public void StatsCountDropsOverFirstChoicesOnly(RectifyCase c)
    {
        var r = Route(c);
        var stats = RoutingStats.From(r.Plan);
        int t = c.Logits.Tokens;
        Assert.Equal(r.K, r.Plan.FirstChoiceColumns);
        Assert.Equal(t * r.K, stats.PairsChosen);
        int firstChoicesDropped = Enumerable.Range(0, t).Sum(tok => Enumerable.Range(0, r.K).Count(j => r.Plan.Dropped[tok * r.Columns + j]));
        Assert.Equal(firstChoicesDropped, stats.PairsDropped);
        Assert.Equal(r.Plan.Kind.Count(k => k == PairKind.FillIn), stats.FillInCandidates);
        Assert.InRange(stats.FillInsUsed, 0, stats.FillInCandidates);
        if (!c.Options.IntraGpu)
        {
            var topK = TopKAtTheSameCapacity(c);
            Assert.Equal(topK.Dropped.Count(d => d), stats.PairsDropped);
            if (c.Options.FillIn) Assert.Equal(t, stats.FillInCandidates);
        }
    }

    /// <summary>
    /// §6.4 FR: per expert the kept (non-rectified) pairs ≤ C; the first choices are placed exactly as TopK
    /// (PreSoftmax, Probs) at CF places them; a kept fill-in takes a slot ≥ f_e (the first-choice pairs of its
    /// expert before dropping), and each expert takes min(asking, C − f_e) fill-ins, chosen by the priority option;
    /// the fill-in is the token's (k+1)-th choice, outside its first k.
    /// </summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = Runs)]
    public void FillInsOnlyUseSlotsLeftByFirstChoices(RectifyCase c)
    {
        var r = Route(c);
        var plan = r.Plan;
        int t = c.Logits.Tokens, e = r.Experts, k = r.K, capacity = plan.Capacity!.Value;

        // Before IR (which may turn a dropped pair into a rectified one), first choices match TopK's placement.
        var beforeIr = new RectifyRouter(e, c.Options with { IntraGpu = false }).Route(c.Logits.Tensor(), c.Placement.Context());
        var topK = TopKAtTheSameCapacity(c);
        int cols = beforeIr.SlotsPerToken;
        for (int tok = 0; tok < t; tok++)
            for (int j = 0; j < k; j++)
            {
                Assert.Equal(topK.Expert[tok * k + j], beforeIr.Expert[tok * cols + j]);
                Assert.Equal(topK.Dropped[tok * k + j], beforeIr.Dropped[tok * cols + j]);
                Assert.Equal(topK.Slot[tok * k + j], beforeIr.Slot[tok * cols + j]);
            }

        var keptInCapacity = new int[e];
        for (int i = 0; i < plan.Expert.Length; i++)
            if (plan.IsKept(i) && plan.Kind[i] != PairKind.Rectified) keptInCapacity[plan.Expert[i]]++;
        Assert.All(keptInCapacity, n => Assert.InRange(n, 0, capacity));
        if (!c.Options.FillIn) return;

        var firstPerExpert = new int[e];
        for (int tok = 0; tok < t; tok++)
            for (int j = 0; j < k; j++) firstPerExpert[beforeIr.Expert[tok * cols + j]]++;
        for (int tok = 0; tok < t; tok++)
        {
            int fill = tok * cols + k;
            var ranking = Ranking(Row(r.Probabilities, tok, e));
            Assert.Equal(ranking[k], beforeIr.Expert[fill]);                       // the (k+1)-th choice
            Assert.DoesNotContain(beforeIr.Expert[fill], beforeIr.Expert.Skip(tok * cols).Take(k));
            if (!beforeIr.Dropped[fill]) Assert.InRange(beforeIr.Slot[fill], firstPerExpert[beforeIr.Expert[fill]], capacity - 1);
        }
        for (int expert = 0; expert < e; expert++)
        {
            var asking = Enumerable.Range(0, t).Select(tok => tok * cols + k).Where(i => beforeIr.Expert[i] == expert).ToArray();
            var kept = asking.Where(i => !beforeIr.Dropped[i]).ToArray();
            Assert.Equal(Math.Min(asking.Length, Math.Max(0, capacity - firstPerExpert[expert])), kept.Length);
            if (kept.Length == asking.Length) continue;
            double Priority(int pair) => c.Options.FillPriority == FillPriority.Top1Gate
                ? r.Probabilities[pair / cols * e + beforeIr.Expert[pair / cols * cols]]
                : r.Probabilities[pair / cols * e + expert];
            if (c.Options.FillPriority == FillPriority.Position) Assert.Equal(asking.Take(kept.Length), kept);
            else
                foreach (int won in kept)
                    foreach (int lost in asking.Except(kept))
                        Assert.True(Priority(won) > Priority(lost) || (Priority(won) == Priority(lost) && won < lost),
                            $"expert {expert}: fill-in {won} kept over {lost}");
        }
    }

    /// <summary>
    /// §6.4 IR: exactly the tokens the Unrouted policy names are rectified; the target is the most probable expert
    /// on the token's own device, outside capacity (no slot); after IR(All) no token is left without an expert.
    /// </summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = Runs)]
    public void IntraGpuRectificationTargetsTheBestLocalExpert(RectifyCase c)
    {
        var r = Route(c);
        var plan = r.Plan;
        var placement = c.Placement.Placement();
        int[] local = placement.ExpertsOn(c.Placement.SourceDevice);
        var beforeIr = new RectifyRouter(r.Experts, c.Options with { IntraGpu = false }).Route(c.Logits.Tensor(), c.Placement.Context());
        int cols = beforeIr.SlotsPerToken;
        for (int tok = 0; tok < c.Logits.Tokens; tok++)
        {
            int n = Enumerable.Range(tok * cols, cols).Count(beforeIr.IsKept);
            bool unrouted = c.Options.IntraGpu && c.Options.Unrouted switch
            {
                UnroutedPolicy.All => n == 0,
                UnroutedPolicy.Any => n < r.Choices,
                _ => n < r.Choices - 1,
            };
            var rectified = r.PairsOf(tok).Where(i => plan.Kind[i] == PairKind.Rectified).ToArray();
            Assert.True(rectified.Length <= 1);
            int best = local.OrderByDescending(x => r.Probabilities[tok * r.Experts + x]).ThenBy(x => x).First();
            bool merged = unrouted && r.PairsOf(tok).Any(i => plan.Expert[i] == best && plan.Kind[i] != PairKind.Rectified && plan.IsKept(i));
            Assert.Equal(unrouted && !merged, rectified.Length == 1);
            foreach (int i in rectified)
            {
                Assert.Equal(best, plan.Expert[i]);
                Assert.Equal(c.Placement.SourceDevice, placement.DeviceOf(plan.Expert[i]));
                Assert.False(plan.Dropped[i]);
                Assert.Equal(-1, plan.Slot[i]);
            }
        }
        if (c.Options.IntraGpu && c.Options.Unrouted == UnroutedPolicy.All) Assert.Equal(0, plan.TokensWithoutExpert());
        Assert.Equal(plan.Kind.Count(k => k == PairKind.Rectified), RoutingStats.From(plan).RectifiedTokens);
    }

    /// <summary>
    /// Weights: w = μ·g / Σ μ·g with μ = 1 for kept pairs and m = K − n extra on the IR target, so a token's
    /// weights sum to 1; for k = 1 a token kept only through IR has weight exactly 1.
    /// </summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = Runs)]
    public void WeightsAreNormalisedProbabilitiesWithIrMultiplicity(RectifyCase c)
    {
        var r = Route(c);
        var plan = r.Plan;
        double[] w = plan.Weights.ToDoubleArray();
        var local = c.Placement.Placement().ExpertsOn(c.Placement.SourceDevice);
        double tolerance = c.Logits.Float64 ? 1e-12 : 1e-6;
        for (int tok = 0; tok < c.Logits.Tokens; tok++)
        {
            var pairs = r.PairsOf(tok).ToArray();
            int n = r.KeptChoices(tok);
            int missing = r.Choices - n;
            var mu = pairs.Select(i => plan.IsKept(i) ? (plan.Kind[i] == PairKind.Rectified ? missing : 1.0) : 0.0).ToArray();
            // A merged IR target: unrouted, no rectified pair, the best local expert among the kept ones.
            bool unrouted = c.Options.IntraGpu && c.Options.Unrouted switch
            {
                UnroutedPolicy.All => n == 0,
                UnroutedPolicy.Any => n < r.Choices,
                _ => n < r.Choices - 1,
            };
            if (unrouted && !pairs.Any(i => plan.Kind[i] == PairKind.Rectified))
            {
                int best = local.OrderByDescending(x => r.Probabilities[tok * r.Experts + x]).ThenBy(x => x).First();
                int at = Array.FindIndex(pairs, i => plan.Expert[i] == best);
                mu[at] += missing;
            }
            double total = pairs.Select((i, j) => plan.IsKept(i) ? mu[j] * r.Probabilities[tok * r.Experts + plan.Expert[i]] : 0).Sum();
            for (int j = 0; j < pairs.Length; j++)
            {
                double expected = total == 0 || !plan.IsKept(pairs[j]) ? 0 : mu[j] * r.Probabilities[tok * r.Experts + plan.Expert[pairs[j]]] / total;
                Assert.Equal(expected, w[pairs[j]], tolerance);
            }
            if (n == 0 && pairs.Any(i => plan.Kind[i] == PairKind.Rectified) && total > 0)
                Assert.Equal(1.0, pairs.Select(i => w[i]).Sum());                     // exactly one pair, weight exactly 1
        }
    }
}
