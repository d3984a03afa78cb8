using PureMoE.Moe.Parallel;
using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>
/// Every router on an ILGPU device (the CPU emulator): the same plan as on the CPU from the same logits, and
/// exactly one device → host read per Route — the decision (experts, and what capacity or rectification ranks
/// by) that dispatch sizes depend on, packed into one transfer.
/// </summary>
[Trait("Device", "IlgpuCpu")]
public sealed class RouterDeviceTests
{
    private const int Experts = 4, Tokens = 12;

    public static TheoryData<string> Configs =>
    [
        "topk-dropless", "topk-capacity-probs", "topk-capacity-position-padded", "topk-straight-through", "topk-post-softmax",
        "rectify-ir-fill", "rectify-no-ir", "relu", "c2r-full", "c2r-selected",
    ];

    private static IRouter Make(string config) => config switch
    {
        "topk-dropless" => new TopKRouter(Experts, new TopKOptions { K = 2, AuxLossCoeff = 0.01, ZLossCoeff = 1e-3 }),
        "topk-capacity-probs" => new TopKRouter(Experts, new TopKOptions { K = 2, CapacityFactor = 0.75, AuxLossCoeff = 0.01 }),
        "topk-capacity-position-padded" => new TopKRouter(Experts, new TopKOptions { K = 1, CapacityFactor = 1.0, DropPolicy = DropPolicy.Position, PadToCapacity = true }),
        "topk-straight-through" => new TopKRouter(Experts, new TopKOptions { K = 1, StraightThroughTop1 = true, CapacityFactor = 1.0 }),
        "topk-post-softmax" => new TopKRouter(Experts, new TopKOptions { K = 2, Normalization = TopKNormalization.PostSoftmax }),
        "rectify-ir-fill" => new RectifyRouter(Experts, new RectifyOptions { K = 1, CapacityFactor = 0.5, FillIn = true, IntraGpu = true, AuxLossCoeff = 0.01 }),
        "rectify-no-ir" => new RectifyRouter(Experts, new RectifyOptions { K = 1, CapacityFactor = 0.5, FillIn = true, IntraGpu = false }),
        "relu" => new ReluRouter(Experts, new ReluRouterOptions { K = 1, InitialLambda = 0.5f }),
        "c2r-full" => new C2RRouter(Experts, new C2ROptions { K = 2, Candidates = 2 }, [[1, 2, 3], [0, 2, 3], [3, 0, 1], [2, 0, 1]]),
        _ => new C2RRouter(Experts, new C2ROptions { K = 2, Candidates = 2, Weighting = C2RWeighting.SelectedSoftmax }, [[1, 2, 3], [0, 2, 3], [3, 0, 1], [2, 0, 1]]),
    };

    [Theory]
    [MemberData(nameof(Configs))]
    public void APlanOnTheDeviceEqualsTheCpuPlanAndCostsOneHostRead(string config)
    {
        var logits = Tensor.Randn(new Shape(Tokens, Experts), new Rng(7)).MulScalar(2.0);
        // Rectify's IR needs experts on several devices to matter: two devices, the tokens' own is device 0.
        var context = new RoutingContext { Placement = ExpertPlacement.Contiguous(Experts, 2), SourceDevice = 0 };
        var onCpu = Make(config).Route(logits, context);

        var device = Device.IlgpuCpu;
        var deviceLogits = logits.To(device);
        long before = device.HostReads;
        var onDevice = Make(config).Route(deviceLogits, context);
        Assert.Equal(1, device.HostReads - before);

        Assert.Equal(onCpu.Expert, onDevice.Expert);
        Assert.Equal(onCpu.Dropped, onDevice.Dropped);
        Assert.Equal(onCpu.Slot, onDevice.Slot);
        Assert.Equal(onCpu.Kind, onDevice.Kind);
        Assert.Equal(onCpu.Capacity, onDevice.Capacity);
        Assert.Equal(device, onDevice.Weights.Device);
        Close(onCpu.Weights, onDevice.Weights);
        foreach (var (a, b) in new[] { (onCpu.AuxLoss, onDevice.AuxLoss), (onCpu.ZLoss, onDevice.ZLoss), (onCpu.SparsityLoss, onDevice.SparsityLoss) })
        {
            Assert.Equal(a is null, b is null);
            if (a is not null) Close(a, b!);
        }
        // Statistics come from the plan's host arrays; on the device they read nothing.
        before = device.HostReads;
        var stats = RoutingStats.From(onDevice);
        Assert.Equal(0, device.HostReads - before);
        Assert.Equal(RoutingStats.From(onCpu).ExpertLoad, stats.ExpertLoad);
    }

    private static void Close(Tensor expected, Tensor actual)
    {
        var (e, a) = (expected.ToFloatArray(), actual.ToFloatArray());
        Assert.Equal(e.Length, a.Length);
        for (int i = 0; i < e.Length; i++) Assert.True(Math.Abs(e[i] - a[i]) <= 1e-6 + 1e-5 * Math.Abs(e[i]), $"[{i}]: {a[i]} vs {e[i]}");
    }
}
