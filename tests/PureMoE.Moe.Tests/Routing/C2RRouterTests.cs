using FsCheck;
using FsCheck.Xunit;
using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>C2R collaboration-constrained routing: ROUTERS.md §4 and invariants §6.1, §6.6.</summary>
public class C2RRouterTests
{
    private static RoutingContext Context(int experts) => RoutingContext.SingleDevice(experts);

    /// <summary>A router for case <paramref name="c"/> with random lists, a random T in [k − 1, E − 1] and a random variant.</summary>
    private static C2RRouter RandomRouter(GateLogitsCase c, int extraSeed, out int[][] lists)
    {
        var rng = new Rng(c.Seed ^ (ulong)extraSeed);
        lists = RouterGen.RandomLists(c.Experts, rng);
        var weighting = c.K > 1 && rng.NextInt(2) == 1 ? C2RWeighting.SelectedSoftmax : C2RWeighting.FullSoftmax;
        var options = new C2ROptions
        {
            K = c.K,
            Candidates = c.K - 1 + rng.NextInt(c.Experts - c.K + 1),
            Weighting = weighting,
            SelectedScale = weighting == C2RWeighting.SelectedSoftmax ? 0.5 + rng.NextDouble() * 2 : 1,
        };
        return new C2RRouter(c.Experts, options, lists);
    }

    /// <summary>a ranks before b in top-k order: higher score, or equal score and lower index.</summary>
    private static bool RanksBefore(double[] s, int a, int b) => s[a] > s[b] || (s[a] == s[b] && a < b);

    [Property(Arbitrary = [typeof(RouterArbitraries)], MaxTest = 800)]
    public void ExpertsAreTheTopExpertAndItsBestCandidates(GateLogitsCase c, PositiveInt extra)
    {
        var router = RandomRouter(c, extra.Get, out var lists);
        var o = router.Options;
        var logits = c.Tensor();
        var plan = router.Route(logits, Context(c.Experts));
        plan.Validate();
        Assert.Equal(o.K, plan.SlotsPerToken);
        Assert.Null(plan.Capacity);

        var scores = (o.Weighting == C2RWeighting.FullSoftmax ? logits.Softmax(-1) : logits).ToDoubleArray();
        var probabilities = logits.Softmax(-1).ToDoubleArray();
        var w = plan.Weights.ToDoubleArray();
        for (int t = 0; t < c.Tokens; t++)
        {
            var s = scores.Skip(t * c.Experts).Take(c.Experts).ToArray();
            var chosen = plan.Expert.Skip(t * o.K).Take(o.K).ToArray();
            Assert.Equal(o.K, chosen.Distinct().Count());                                  // distinct, |·| = k
            int e1 = Enumerable.Range(0, c.Experts).Aggregate((best, e) => RanksBefore(s, e, best) ? e : best);
            Assert.Equal(e1, chosen[0]);                                                   // e1 = argmax
            var candidates = lists[e1].Take(o.Candidates).ToHashSet();
            Assert.All(chosen.Skip(1), e => Assert.Contains(e, candidates));                // ⊆ {e1} ∪ first-T(List(e1))
            for (int j = 1; j < o.K; j++) Assert.True(RanksBefore(s, chosen[j - 1], chosen[j]));  // descending slots
            foreach (int left in candidates.Except(chosen))                                 // the best candidates were taken
                Assert.True(RanksBefore(s, chosen[^1], left), $"{c}: candidate {left} outranks chosen {chosen[^1]}");

            if (o.Weighting == C2RWeighting.FullSoftmax)
                for (int j = 0; j < o.K; j++)
                    Assert.Equal(probabilities[t * c.Experts + chosen[j]], w[t * o.K + j]);
            else
            {
                var l = chosen.Select(e => logits.ToDoubleArray()[t * c.Experts + e]).ToArray();
                double z = l.Sum(v => Math.Exp(v - l.Max()));
                for (int j = 0; j < o.K; j++)
                    Assert.Equal(o.SelectedScale * Math.Exp(l[j] - l.Max()) / z, w[t * o.K + j], tolerance: c.Double ? 1e-12 : 1e-6);
            }
        }
    }

    [Property(Arbitrary = [typeof(RouterArbitraries)], MaxTest = 800)]
    public void WithAllCandidatesItIsExactlyTopK(GateLogitsCase c, PositiveInt extra, bool selected)
    {
        // T = E − 1: the engine's TopK of the same scores, same experts in the same slots (ties: lower index first;
        // style 1 makes many ties), same weights. Holds for any lists.
        var weighting = selected && c.K > 1 ? C2RWeighting.SelectedSoftmax : C2RWeighting.FullSoftmax;
        var lists = RouterGen.RandomLists(c.Experts, new Rng((ulong)extra.Get));
        var router = new C2RRouter(c.Experts, new C2ROptions { K = c.K, Candidates = c.Experts - 1, Weighting = weighting }, lists);
        var logits = c.Tensor();
        var plan = router.Route(logits, Context(c.Experts));

        var scores = weighting == C2RWeighting.FullSoftmax ? logits.Softmax(-1) : logits;
        var (topValues, topIndices) = scores.TopK(c.K);
        Assert.Equal(topIndices.ToLongArray().Select(e => (int)e).ToArray(), plan.Expert);
        var expectedWeights = weighting == C2RWeighting.FullSoftmax ? topValues : topValues.Softmax(-1);
        Assert.Equal(expectedWeights.ToDoubleArray(), plan.Weights.ToDoubleArray());
    }

    [Fact]
    public void ACandidateListRestrictsTheSecondChoice()
    {
        // Scores favour 0 then 1 then 2 then 3; List(0) = [3, 2, 1] with T = 1 forces 3 as the second expert.
        int[][] lists = [[3, 2, 1], [0, 2, 3], [0, 1, 3], [0, 1, 2]];
        var logits = Tensor.FromArray([4.0, 3, 2, 1], 1, 4);
        var narrow = new C2RRouter(4, new C2ROptions { K = 2, Candidates = 1 }, lists).Route(logits, Context(4));
        Assert.Equal([0, 3], narrow.Expert);
        var wider = new C2RRouter(4, new C2ROptions { K = 2, Candidates = 2 }, lists).Route(logits, Context(4));
        Assert.Equal([0, 2], wider.Expert);
        var all = new C2RRouter(4, new C2ROptions { K = 2, Candidates = 3 }, lists).Route(logits, Context(4));
        Assert.Equal([0, 1], all.Expert);
    }

    [Theory]
    [InlineData(C2RWeighting.FullSoftmax, 2, 1.0, 1UL)]
    [InlineData(C2RWeighting.FullSoftmax, 1, 1.0, 2UL)]
    [InlineData(C2RWeighting.SelectedSoftmax, 2, 1.0, 3UL)]
    [InlineData(C2RWeighting.SelectedSoftmax, 3, 2.5, 4UL)]
    public void LayerGradientsMatchFiniteDifferences(C2RWeighting weighting, int k, double scale, ulong seed)
    {
        // Float64 layer, E = 5, T = 2 candidates from random lists. Inputs are redrawn until every token's scores
        // are at least 1e-4 apart (no tie the finite-difference step could flip).
        const int experts = 5;
        var lists = RouterGen.RandomLists(experts, new Rng(seed));
        var router = new C2RRouter(experts, new C2ROptions { K = k, Candidates = Math.Max(k - 1, 2), Weighting = weighting, SelectedScale = scale }, lists);
        var layer = new MoeLayer(5, 7, router, new Rng(seed), 0.4, DType.Float64);
        var rng = new Rng(seed + 50);
        Tensor x;
        do x = Tensor.Randn(new Shape(6, 5), rng, dtype: DType.Float64);
        while (!AllGapsAtLeast(layer.Gate.Forward(x).ToDoubleArray(), experts, 1e-4));
        LayerGradCheck.Check($"MoeLayer+C2R({weighting}, k={k})", layer, () => layer.Forward(x), seed, extraInputs: x);
    }

    private static bool AllGapsAtLeast(double[] logits, int experts, double gap)
    {
        for (int t = 0; t < logits.Length / experts; t++)
        {
            var row = logits.Skip(t * experts).Take(experts).Order().ToArray();
            for (int j = 1; j < row.Length; j++) if (row[j] - row[j - 1] < gap) return false;
        }
        return true;
    }

    [Theory]
    [InlineData(0, 1, 0, C2RWeighting.FullSoftmax, 1.0, "Experts")]
    [InlineData(4, 0, 0, C2RWeighting.FullSoftmax, 1.0, "K = 0")]
    [InlineData(4, 5, 3, C2RWeighting.FullSoftmax, 1.0, "K = 5")]
    [InlineData(4, 3, 1, C2RWeighting.FullSoftmax, 1.0, "Candidates (T) = 1")]
    [InlineData(4, 2, 4, C2RWeighting.FullSoftmax, 1.0, "Candidates (T) = 4")]
    [InlineData(4, 2, 2, C2RWeighting.SelectedSoftmax, 0.0, "SelectedScale = 0")]
    [InlineData(4, 2, 2, C2RWeighting.SelectedSoftmax, double.NaN, "SelectedScale = NaN")]
    [InlineData(4, 1, 2, C2RWeighting.SelectedSoftmax, 1.0, "K = 1")]
    [InlineData(4, 2, 2, (C2RWeighting)7, 1.0, "Weighting = 7")]
    public void InvalidOptionsAreNamed(int experts, int k, int candidates, C2RWeighting weighting, double scale, string named)
    {
        var lists = RouterGen.RandomLists(Math.Max(experts, 0), new Rng(1));
        var ex = Assert.ThrowsAny<ArgumentException>(() => new C2RRouter(experts,
            new C2ROptions { K = k, Candidates = candidates, Weighting = weighting, SelectedScale = scale }, lists));
        Assert.Contains(named, ex.Message);
    }

    [Fact]
    public void MalformedListsAreRejected()
    {
        var options = new C2ROptions { K = 2, Candidates = 1 };
        Assert.Contains("3 candidate lists", Assert.Throws<ArgumentException>(() =>
            new C2RRouter(4, options, [[1, 2, 3], [0, 2, 3], [0, 1, 3]])).Message);
        Assert.Contains("List(1)", Assert.Throws<ArgumentException>(() =>
            new C2RRouter(4, options, [[1, 2, 3], [1, 2, 3], [0, 1, 3], [0, 1, 2]])).Message);
        Assert.Contains("List(2) has 2", Assert.Throws<ArgumentException>(() =>
            new C2RRouter(4, options, [[1, 2, 3], [0, 2, 3], [0, 1], [0, 1, 2]])).Message);
        Assert.Contains("[T, 4]", Assert.Throws<ArgumentException>(() =>
            new C2RRouter(4, options, RouterGen.RandomLists(4, new Rng(2))).Route(Tensor.Zeros(new Shape(2, 3)), Context(4))).Message);
    }
}
