using PureMoE.Moe.Parallel;

namespace PureMoE.Moe.Tests.ExpertParallel;

/// <summary>
/// The C2R claim: after brief TopK training (k = 2, E = 8, P = 4) and profiling, C2R with its co-located placement
/// (T = E/P − 1) moves at least 20% fewer bytes than TopK with the contiguous placement for the same tokens.
/// </summary>
public class C2RExchangeTests
{
    [Fact]
    public void C2RCoLocatedMovesAtLeast20PercentFewerBytes()
    {
        var result = C2RExchangeStudy.Run();
        TestContext.Current.SendDiagnosticMessage(
            $"TopK contiguous: {result.TopKContiguousBytes} B, C2R co-located: {result.C2RCoLocatedBytes} B per step each way " +
            $"({result.Reduction:P1} fewer; placement {result.Placement}; train loss {result.TrainLossFirst:G4} -> {result.TrainLossLast:G4})");
        Assert.True(result.TrainLossLast < result.TrainLossFirst, "the TopK model should train");
        Assert.True(result.Reduction >= 0.20,
            $"C2R moved {result.C2RCoLocatedBytes} B vs TopK {result.TopKContiguousBytes} B: only {result.Reduction:P1} fewer");
    }
}
