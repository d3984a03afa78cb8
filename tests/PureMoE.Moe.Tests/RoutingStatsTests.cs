using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Tests;

/// <summary><see cref="RoutingStats.From"/> on a hand-made plan; <see cref="RoutingStats.Merge"/>: the ranks of an expert-parallel step, the micro-batches of an accumulated one.</summary>
public class RoutingStatsTests
{
    private static RoutingStats Part(int tokens, int[] load, params (string Key, double Value)[] extras) => new()
    {
        Tokens = tokens,
        Experts = load.Length,
        PairsChosen = tokens,
        ExpertLoad = load,
        CoActivation = new long[load.Length * load.Length],
        AuxLoss = 0.5,
        Extras = extras.ToDictionary(e => e.Key, e => e.Value),
    };

    [Fact]
    public void CountsAddUpAndFractionsAreMeansOverTokens()
    {
        var a = Part(30, [10, 20], ("rectify.ir_merged", 3), ("sparsity", 0.5), ("lambda", 2e-6));
        var b = Part(10, [6, 4], ("rectify.ir_merged", 4), ("sparsity", 0.9), ("lambda", 2e-6));
        var m = RoutingStats.Merge([a, b]);

        Assert.Equal(40, m.Tokens);
        Assert.Equal([16, 24], m.ExpertLoad);
        Assert.Equal(40, m.PairsChosen);
        Assert.Equal(1.0, m.AuxLoss);
        Assert.Equal(7, m.Extras["rectify.ir_merged"]);
        // A sparsity over all 40 tokens: (30·0.5 + 10·0.9) / 40, what one plan of them all would report.
        Assert.Equal(0.6, m.Extras["sparsity"], 12);
        Assert.Equal(2e-6, m.Extras["lambda"], 1e-18);
    }

    [Fact]
    public void AKeyOnlySomePartsHaveCountsOnlyThose()
    {
        var m = RoutingStats.Merge([Part(8, [4, 4], ("sparsity", 0.25)), Part(8, [8, 0])]);
        Assert.Equal(0.25, m.Extras["sparsity"]);
        Assert.Single(m.Extras);
    }

    /// <summary>
    /// From one plan at capacity 1 with a fill-in column: token 0 keeps its first choice (expert 0) and its fill-in
    /// (expert 1, which no first choice asked for); token 1's first choice (expert 0, full) is dropped and so is its
    /// fill-in (expert 1, now full). One first choice dropped, two fill-in candidates, one used.
    /// </summary>
    [Fact]
    public void DropsAreCountedOverTheFirstChoiceColumns()
    {
        var weights = Tensor.FromArray([0.7f, 0.3f, 0, 0], 2, 2);
        int[] expert = [0, 1, 0, 1];
        bool[] dropped = [false, false, true, true];
        int[] slot = [0, 0, -1, -1];
        var plan = new RoutingPlan(2, 2, 2, expert, weights, dropped, slot,
            [PairKind.Primary, PairKind.FillIn, PairKind.Primary, PairKind.FillIn], capacity: 1) { FirstChoiceColumns = 1 };
        plan.Validate();
        var s = RoutingStats.From(plan);
        Assert.Equal(2, s.PairsChosen);
        Assert.Equal(1, s.PairsDropped);
        Assert.Equal(2, s.FillInCandidates);
        Assert.Equal(1, s.FillInsUsed);
        Assert.Equal(1, s.TokensDropped);

        // Without FirstChoiceColumns every column counts: the unused fill-in would be a second drop.
        var all = RoutingStats.From(new RoutingPlan(2, 2, 2, expert, weights, dropped, slot, capacity: 1));
        Assert.Equal((4, 2), (all.PairsChosen, all.PairsDropped));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RoutingPlan(2, 2, 2, expert, weights) { FirstChoiceColumns = 3 });
    }
}
