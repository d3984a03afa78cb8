using System.Diagnostics;
using PureMoE.Backends.Ilgpu;
using PureMoE.Moe.Parallel;
using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Tests.ExpertParallel;

/// <summary>ILGPU groups share one collection: the CPU emulator is slow, and side by side its tests only contend.</summary>
[CollectionDefinition("IlgpuGroup", DisableParallelization = true)]
public sealed class IlgpuGroupCollection;

/// <summary>
/// Expert parallelism over P ILGPU devices, each rank's weights and tokens on its own accelerator: float32 outputs and
/// gradients equal the 1-device layer on <see cref="Device.Cpu"/> to 1e-5 relative, bytes equal the formula, and the
/// exchange records the path it took. On ILGPU CPU accelerators (tiny shapes: the emulator is slow) with peer access
/// off (host-staged) and on (ILGPU reports its CPU accelerators as peers), and on two CUDA GPUs where a machine has them.
/// </summary>
[Collection("IlgpuGroup")]
public class IlgpuExpertParallelTests
{
    internal const int Hidden = 8, Intermediate = 16, Experts = 4;

    public static TheoryData<int, string> DevicesAndRouters()
    {
        var data = new TheoryData<int, string>();
        foreach (int p in new[] { 1, 2 })
            foreach (var router in new[] { "topk", "rectify", "relu", "c2r" })
                data.Add(p, router);
        return data;
    }

    [Theory]
    [MemberData(nameof(DevicesAndRouters))]
    public void HostStagedGroupEqualsSingleDeviceLayer(int devices, string router)
    {
        var stats = CheckEquivalence(DeviceGroup.IlgpuCpu(devices, peerAccess: false), router, seed: (ulong)(10 * devices + router.Length));
        for (int s = 0; s < devices; s++)
            for (int q = 0; q < devices; q++)
                if (s != q && stats.TokenMatrix[s * devices + q] > 0) Assert.Equal(RankLink.HostStaged, stats.PathOf(s, q));
        Assert.Equal(0, stats.PairsOver(RankLink.Peer));
        if (devices > 1) Assert.True(stats.PairsOver(RankLink.HostStaged) > 0, "tokens should cross devices");
    }

    [Fact]
    public void FourHostStagedDevicesEqualSingleDeviceLayer()
    {
        var stats = CheckEquivalence(DeviceGroup.IlgpuCpu(4, peerAccess: false), "topk", seed: 4);
        Assert.Equal(0, stats.PairsOver(RankLink.Peer));
    }

    [Fact]
    public void PeerGroupCopiesDeviceToDevice()
    {
        // ILGPU 1.5 says its CPU accelerators can access each other (host memory): the group takes the peer path.
        var group = DeviceGroup.IlgpuCpu(2);
        Assert.Equal(IlgpuDevices.CanAccessPeer(Device.IlgpuCpuAt(0), Device.IlgpuCpuAt(1)) ? RankLink.Peer : RankLink.HostStaged,
            group.LinkBetween(0, 1));
        var stats = CheckEquivalence(group, "topk", seed: 7);
        Assert.Equal(group.LinkBetween(0, 1), stats.PathOf(0, 1));
        Assert.Equal(group.LinkBetween(1, 0), stats.PathOf(1, 0));
    }

    [Fact]
    public void CopiesLandOnTheReceiverAndMixingDevicesStaysAnError()
    {
        foreach (var peer in new[] { false, true })
        {
            var group = DeviceGroup.IlgpuCpu(2, peer);
            var x = Tensor.FromArray([1f, 2f, 3f, 4f, 5f, 6f], 2, 3).To(group.DeviceOf(0));
            var moved = group.Copy(x.Narrow(0, 1, 1), 0, 1);                     // a view that does not start its buffer
            Assert.Equal(group.DeviceOf(1), moved.Device);
            Assert.Equal([4f, 5f, 6f], moved.ToArray<float>());
            var e = Assert.Throws<InvalidOperationException>(() => x.Add(group.Copy(x, 0, 1)));
            Assert.Contains("different devices", e.Message);
            Assert.Throws<ArgumentException>(() => group.Copy(x, 1, 0));         // x is not on rank 1
        }
    }

    [Fact]
    public void ThrowingExpertOnAnIlgpuRankNamesItsDevice()
    {
        var (layer, ep, placement) = Make(DeviceGroup.IlgpuCpu(2, peerAccess: false), "topk", 3);
        ep.Exchange.Timeout = TimeSpan.FromSeconds(60);
        ep.BeforeExperts = q => { if (q == 1) throw new InvalidOperationException("expert exploded"); };
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<DeviceFailureException>(() => ep.Forward(Inputs(ep.Group, 3).Ranks, TestContext.Current.CancellationToken));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"took {clock.Elapsed}");
        Assert.Equal(1, e.Rank);
        Assert.Equal("ilgpu-cpu:1", e.Device);
        Assert.Contains("ilgpu-cpu:1", e.Message);
        Assert.Contains("expert exploded", e.Message);

        // A failure in the backward names its rank too, and the next step works again.
        ep.BeforeExperts = null;
        ep.BeforeExpertsBackward = q => { if (q == 0) throw new IOException("gradient lost"); };
        var (ranks, _, weights) = Inputs(ep.Group, 3);
        var ys = ep.Forward(ranks, TestContext.Current.CancellationToken);
        var b = Assert.Throws<DeviceFailureException>(() => Loss(ys, null, weights).Backward());
        Assert.Equal(0, b.Rank);
        Assert.Equal("experts backward", b.Phase);
        ep.BeforeExpertsBackward = null;
        _ = placement;
        Compare(layer, ep, 3, "after failures");
    }

    [Fact]
    [Trait("Device", "Cuda2")]   // two GPUs: not among the Device=Cuda tests a one-GPU machine must pass
    public void TwoCudaGpusEqualSingleDeviceLayer()
    {
        int count;
        try { count = IlgpuDevices.CudaCount; } catch (Exception) { count = 0; }
        Assert.SkipUnless(count >= 2, $"needs 2 CUDA GPUs, this machine has {count}");
        var group = DeviceGroup.Cuda(2);
        var expected = IlgpuDevices.CanAccessPeer(Device.Cuda(0), Device.Cuda(1)) && IlgpuDevices.CanAccessPeer(Device.Cuda(1), Device.Cuda(0))
            ? RankLink.Peer : RankLink.HostStaged;
        Assert.Equal(expected, group.LinkBetween(0, 1));
        var stats = CheckEquivalence(group, "topk", seed: 5);
        Assert.Equal(expected, stats.PathOf(0, 1));
        CheckEquivalence(DeviceGroup.Cuda(2, peerAccess: false), "topk", seed: 5);
    }

    [Fact]
    public void CudaGroupNamesWhatIsMissing()
    {
        int count;
        try { count = IlgpuDevices.CudaCount; } catch (Exception) { count = 0; }
        var e = Assert.Throws<InvalidOperationException>(() => DeviceGroup.Cuda(count + 1));
        Assert.Contains($"needs {count + 1} CUDA GPUs", e.Message);
        Assert.Contains($"has {count}", e.Message);
    }

    // ------------------------------------------------------------------------------------------------------------

    internal static (MoeLayer Layer, ExpertParallelMoeLayer Ep, ExpertPlacement Placement) Make(DeviceGroup group, string router, ulong seed)
    {
        var c = new EpCase(group.Count, Experts, router, group.Count > 1, Hidden, Intermediate, [], seed);
        var placement = c.MakePlacement();
        var layer = new MoeLayer(Hidden, Intermediate, c.MakeRouter(), new Rng(seed), 0.5, DType.Float32, placement: placement);
        return (layer, new ExpertParallelMoeLayer(layer, group, placement), placement);
    }

    // Each rank's float32 tokens on the host (for the reference) and on its device (for the group), and the loss weights.
    internal static (Tensor[] Ranks, Tensor[] Host, Tensor[] LossWeights) Inputs(DeviceGroup group, ulong seed)
    {
        int p = group.Count;
        var host = new Tensor[p];
        var ranks = new Tensor[p];
        var weights = new Tensor[p];
        for (int r = 0; r < p; r++)
        {
            int tokens = 3 + (int)((seed + (ulong)r) % 3);
            host[r] = Tensor.Randn(new Shape(tokens, Hidden), new Rng(seed * 31 + (ulong)r + 1));
            host[r].RequiresGrad = true;
            ranks[r] = host[r].Detach().To(group.DeviceOf(r));
            ranks[r].RequiresGrad = true;
            weights[r] = Tensor.Randn(new Shape(tokens, Hidden), new Rng(seed * 7 + (ulong)r));
        }
        return (ranks, host, weights);
    }

    internal static Tensor Loss(IReadOnlyList<Tensor> ys, Tensor? reg, IReadOnlyList<Tensor> weights)
    {
        Tensor? total = null;
        for (int r = 0; r < ys.Count; r++)
        {
            var term = ys[r].Mul(weights[r].To(ys[r].Device)).Sum();
            total = total is null ? term : total.Add(term.To(ys[0].Device));
        }
        return reg is null ? total! : total!.Add(reg);
    }

    private static ExchangeStats CheckEquivalence(DeviceGroup group, string router, ulong seed)
    {
        var (layer, ep, placement) = Make(group, router, seed);
        var stats = Compare(layer, ep, seed, $"P={group.Count} {router}");
        long formula = ExchangeStats.FormulaBytes(ep.LastPlans!, placement, Hidden, sizeof(float));
        Assert.Equal(formula, stats.DispatchBytes);
        Assert.Equal(formula, stats.CombineBytes);
        Assert.Equal(2 * formula, stats.BackwardBytes);
        ExpertParallelEquivalenceTests.CheckConservation(stats);
        return stats;
    }

    // One step of the 1-device layer (each rank's batch routed with SourceDevice = rank) and one of the group; outputs
    // and every gradient must agree to 1e-5 relative.
    private static ExchangeStats Compare(MoeLayer layer, ExpertParallelMoeLayer ep, ulong seed, string what)
    {
        var group = ep.Group;
        int p = group.Count;
        var (ranks, host, weights) = Inputs(group, seed);

        layer.ZeroGrad();
        var expected = new Tensor[p];
        Tensor? reg = null;
        for (int r = 0; r < p; r++)
        {
            layer.SourceDevice = r;
            expected[r] = layer.Forward(host[r]);
            if (layer.LastRegularizationLoss is { } l) reg = reg is null ? l : reg.Add(l);
        }
        Loss(expected, reg, weights).Backward();

        ep.ZeroGrad();
        var actual = ep.Forward(ranks, TestContext.Current.CancellationToken);
        Loss(actual, ep.LastRegularizationLoss, weights).Backward();
        ep.AllReduceGateGradients();

        for (int r = 0; r < p; r++)
        {
            Assert.Equal(group.DeviceOf(r), actual[r].Device);
            AssertClose($"{what}: output of rank {r}", expected[r], actual[r]);
            AssertClose($"{what}: input gradient of rank {r}", host[r].Grad!, ranks[r].Grad!);
        }
        AssertClose($"{what}: gate gradient", layer.Gate.Weight.Grad!, ep.Shard(0).Gate.Weight.Grad!);
        for (int e = 0; e < Experts; e++)
        {
            var (a, b) = (layer.Experts.List[e], ep.Expert(e));
            AssertClose($"{what}: expert {e} w1 gradient", a.W1.Weight.Grad, b.W1.Weight.Grad);
            AssertClose($"{what}: expert {e} w2 gradient", a.W2.Weight.Grad, b.W2.Weight.Grad);
            AssertClose($"{what}: expert {e} w3 gradient", a.W3.Weight.Grad, b.W3.Weight.Grad);
        }
        return ep.LastStats!;
    }

    // 1e-5 relative to the tensor's largest magnitude: float32 sums run in another order on the other backend, so
    // elements near zero carry absolute, not relative, error. A missing gradient counts as zeros.
    private static void AssertClose(string what, Tensor? expected, Tensor? actual)
    {
        if (expected is null && actual is null) return;
        double[] a = expected?.ToDoubleArray() ?? new double[actual!.Numel], b = actual?.ToDoubleArray() ?? new double[a.Length];
        if (expected is not null && actual is not null) Assert.Equal(expected.Shape, actual.Shape);
        double scale = a.Length == 0 ? 0 : a.Max(Math.Abs);
        for (int i = 0; i < a.Length; i++)
        {
            double tol = 1e-5 * Math.Max(scale, 1e-30);
            if (!(Math.Abs(a[i] - b[i]) <= tol))
                throw new Xunit.Sdk.XunitException($"{what}[{i}]: 1-device {a[i]:G9}, ILGPU group {b[i]:G9} (tolerance {tol:E2})");
        }
    }
}
