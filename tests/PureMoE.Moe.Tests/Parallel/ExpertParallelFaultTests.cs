using System.Diagnostics;
using PureMoE.Moe.Parallel;
using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Tests.ExpertParallel;

/// <summary>
/// Failures on one rank surface on the caller with the rank named, within a bounded time, and leave the layer usable:
/// a throwing expert, a failing copy, a hung rank (timeout) and a cancelled exchange; the next step then equals the
/// 1-device layer again.
/// </summary>
public class ExpertParallelFaultTests
{
    private static readonly EpCase Case = new(4, 8, "topk", false, 5, 6, [6, 7, 5, 8], 42);

    private static (MoeLayer Layer, ExpertParallelMoeLayer Ep) Make()
    {
        var placement = Case.MakePlacement();
        var layer = ExpertParallelEquivalenceTests.Reference(Case, placement);
        return (layer, new ExpertParallelMoeLayer(layer, DeviceGroup.LogicalCpu(4), placement, TimeSpan.FromSeconds(20)));
    }

    private static void AssertStillWorks(MoeLayer layer, ExpertParallelMoeLayer ep)
    {
        var expected = ExpertParallelEquivalenceTests.RunReference(Case, layer);
        var actual = ExpertParallelEquivalenceTests.RunParallel(Case, ep);
        for (int r = 0; r < 4; r++)
            ExpertParallelEquivalenceTests.AssertClose($"output of rank {r} after a failure", expected.Outputs[r], actual.Outputs[r]);
        ExpertParallelEquivalenceTests.AssertClose("gate gradient after a failure", expected.GateGrad, actual.GateGrad);
    }

    [Fact]
    public void ThrowingExpertNamesItsDevice()
    {
        var (layer, ep) = Make();
        ep.BeforeExperts = q => { if (q == 2) throw new InvalidOperationException("expert exploded"); };
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<DeviceFailureException>(() => ep.Forward(Case.MakeInputs(), TestContext.Current.CancellationToken));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10));
        Assert.Equal(2, e.Rank);
        Assert.Equal("experts", e.Phase);
        Assert.Contains("Device 2", e.Message);
        Assert.Contains("expert exploded", e.Message);
        Assert.IsType<InvalidOperationException>(e.InnerException);
        ep.BeforeExperts = null;
        AssertStillWorks(layer, ep);
    }

    [Fact]
    public void FailingCopyNamesTheReceivingDevice()
    {
        var (layer, ep) = Make();
        ep.Group.CopyFault = (from, to) => { if (from == 1 && to == 3) throw new IOException($"link {from}->{to} down"); };
        var e = Assert.Throws<DeviceFailureException>(() => ep.Forward(Case.MakeInputs(), TestContext.Current.CancellationToken));
        Assert.Equal(3, e.Rank);
        Assert.Contains("link 1->3 down", e.Message);
        ep.Group.CopyFault = null;
        AssertStillWorks(layer, ep);
    }

    [Fact]
    public void HungDeviceTimesOutWithinTheBound()
    {
        var (layer, ep) = Make();
        using var release = new ManualResetEventSlim(false);
        ep.Exchange.Timeout = TimeSpan.FromMilliseconds(300);
        ep.BeforeExperts = q => { if (q == 1) release.Wait(TimeSpan.FromSeconds(30)); };
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<ExchangeTimeoutException>(() => ep.Forward(Case.MakeInputs(), TestContext.Current.CancellationToken));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
        Assert.Contains(1, e.PendingRanks);
        Assert.Contains("timed out", e.Message);
        release.Set();
        ep.BeforeExperts = null;
        ep.Exchange.Timeout = TimeSpan.FromSeconds(20);
        AssertStillWorks(layer, ep);
    }

    [Fact]
    public void CancelledExchangeStopsCleanly()
    {
        var (layer, ep) = Make();
        using var release = new ManualResetEventSlim(false);
        ep.BeforeExperts = q => { if (q == 3) release.Wait(TimeSpan.FromSeconds(30)); };
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(200);
        var clock = Stopwatch.StartNew();
        var e = Assert.ThrowsAny<OperationCanceledException>(() => ep.Forward(Case.MakeInputs(), cts.Token));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
        Assert.Contains("cancelled", e.Message);
        release.Set();
        ep.BeforeExperts = null;
        AssertStillWorks(layer, ep);

        // Cancelled before it starts: nothing runs.
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => ep.Forward(Case.MakeInputs(), cancelled.Token));
        AssertStillWorks(layer, ep);
    }

    [Fact]
    public void RectifyIntraGpuPairsStayOnTheSourceDevice()
    {
        // Tight capacity so IR fires: every rectified pair is on its token's own rank, and the bytes equal the formula
        // over the kept pairs (rectified ones add none).
        var router = new RectifyRouter(8, new RectifyOptions { K = 1, FillIn = false, IntraGpu = true, CapacityFactor = 0.3 });
        var layer = new MoeLayer(4, 5, router, new Rng(3), 0.5, DType.Float64);
        var ep = new ExpertParallelMoeLayer(layer, DeviceGroup.LogicalCpu(4));
        var xs = Enumerable.Range(0, 4).Select(r => Tensor.Randn(new Shape(12, 4), new Rng((ulong)r + 100), dtype: DType.Float64)).ToArray();
        ep.Forward(xs, TestContext.Current.CancellationToken);
        int rectified = 0;
        long withoutRectified = 0;
        for (int r = 0; r < 4; r++)
        {
            var plan = ep.LastPlans![r];
            for (int t = 0; t < plan.Tokens; t++)
            {
                var devices = new HashSet<int>();
                for (int j = 0; j < plan.SlotsPerToken; j++)
                {
                    int i = t * plan.SlotsPerToken + j;
                    if (!plan.IsKept(i)) continue;
                    int q = ep.Placement.DeviceOf(plan.Expert[i]);
                    if (plan.Kind[i] == PairKind.Rectified) { rectified++; Assert.Equal(r, q); }
                    else devices.Add(q);
                }
                devices.Remove(r);
                withoutRectified += devices.Count;
            }
        }
        Assert.True(rectified > 0, "capacity 0.3 should leave tokens for IR");
        Assert.Equal(withoutRectified * 4 * sizeof(double), ep.LastStats!.DispatchBytes);
    }
}
