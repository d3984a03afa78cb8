using System.Diagnostics;
using PureMoE.Backends;
using PureMoE.Backends.Ilgpu;
using PureMoE.Cli;
using PureMoE.Engine.Tests.Ilgpu;
using PureMoE.Moe.Models;

namespace PureMoE.Engine.Tests.Cli;

/// <summary>
/// `puremoe train --device ilgpu-cpu`: the whole training (parameters, forward, backward, clip, AdamW, schedule,
/// validation) on an ILGPU device, checked against the CPU run of the same options, and the device → host reads
/// of a step counted. Tiny settings: ILGPU's CPU accelerator emulates a GPU slowly.
/// </summary>
[Collection("Ilgpu")]
public sealed class TrainOnDeviceTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("puremoe-device").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private const int Layers = 2;

    private static TrainOptions Tiny(RouterSpec router, string device) => new()
    {
        Steps = 2, Batch = 2, Seq = 8, Hidden = 16, FeedForward = 32, Layers = Layers, Heads = 2, KvHeads = 1, Experts = 4, TopK = 2,
        Warmup = 1, EvalEvery = 100, EvalBatches = 1, Clip = 0.05, Router = router, Device = device,
    };

    public static TheoryData<string> Routers => ["topk", "rectify", "relu", "c2r"];

    private RouterSpec Spec(string router) => router switch
    {
        // Capacity with drops ranked by gate (the gates travel with the decision), aux and z losses.
        "topk" => RouterSpec.Create("topk", new Dictionary<string, string> { ["k"] = "2", ["capacity_factor"] = "1.0", ["aux_loss"] = "0.01", ["z_loss"] = "0.001" }),
        // Capacity, fill-in and Intra-GPU rectification (all of g travels with the decision).
        "rectify" => RouterSpec.Create("rectify", new Dictionary<string, string> { ["k"] = "1", ["capacity_factor"] = "1.0", ["aux_loss"] = "0.01" }),
        "relu" => RouterSpec.Create("relu", new Dictionary<string, string> { ["k"] = "1" }),
        _ => RouterSpec.Create("c2r", new Dictionary<string, string> { ["k"] = "2", ["candidates"] = "2" }),
    };

    // C2R continues a saved model (profiled on the CPU); the others start from the seed.
    private TrainOptions Options(string router, string device)
    {
        var o = Tiny(Spec(router), device);
        if (router != "c2r") return o;
        string from = Path.Combine(_dir, "from-topk");
        if (!Directory.Exists(from))
            TrainCommand.Run(Tiny(Spec("topk"), "cpu") with { Steps = 1, OutDir = from }, TextWriter.Null, TestContext.Current.CancellationToken);
        return o with { FromDir = from };
    }

    [Theory]
    [MemberData(nameof(Routers))]
    public void TrainingOnIlgpuCpuMatchesTheCpuAndReadsTheHostOncePerMoeLayer(string router)
    {
        var ct = TestContext.Current.CancellationToken;
        var cpu = TrainCommand.Run(Options(router, "cpu"), TextWriter.Null, ct);
        var clock = Stopwatch.StartNew();
        var gpu = TrainCommand.Run(Options(router, "ilgpu-cpu"), TextWriter.Null, ct);
        output.WriteLine($"{router}: ilgpu-cpu run {clock.Elapsed.TotalSeconds:F1} s; losses cpu {string.Join(", ", cpu.TrainLosses)} / ilgpu {string.Join(", ", gpu.TrainLosses)}; " +
                         $"host reads per step {string.Join(", ", gpu.History.Select(h => h.HostReads))}");

        // Same losses to a relative 1e-4: training, validation (float32 kernels summing in another order).
        Assert.Equal(2, gpu.TrainLosses.Count);
        for (int i = 0; i < cpu.TrainLosses.Count; i++)
            Assert.True(Math.Abs(gpu.TrainLosses[i] - cpu.TrainLosses[i]) <= 1e-4 * Math.Abs(cpu.TrainLosses[i]),
                $"{router} step {i + 1}: loss {gpu.TrainLosses[i]} on ilgpu-cpu, {cpu.TrainLosses[i]} on the cpu");
        Assert.Equal(cpu.ValidLosses.Count, gpu.ValidLosses.Count);
        for (int i = 0; i < cpu.ValidLosses.Count; i++)
            Assert.True(Math.Abs(gpu.ValidLosses[i].Loss - cpu.ValidLosses[i].Loss) <= 1e-4 * cpu.ValidLosses[i].Loss,
                $"{router} validation {i}: {gpu.ValidLosses[i].Loss} vs {cpu.ValidLosses[i].Loss}");
        // The model lives on the device; the CPU run reads no device.
        Assert.All(gpu.Model.Parameters(), p => Assert.Equal(Device.IlgpuCpu, p.Device));
        Assert.All(cpu.History, h => Assert.Equal(0, h.HostReads));

        // Device → host reads of one step, allowed:
        //   1 per MoE layer in the forward: the routing decision, which the dispatch sizes (rows per expert) and
        //     capacity slots depend on; each router packs all it needs into that one read (HostRead.Doubles);
        //   1 at the end of the step: the loss, with each layer's regulariser values for the statistics;
        //   none in the backward, the gradient clip (on the device) or AdamW.
        // Not counted against this: the composed IBackend.WeightedGatherSum(Backward) default downloads its index
        // (one read in each layer's forward and one in its backward) until IlgpuBackend has its own kernels.
        long expected = Layers + 1 + (IlgpuOverrides(nameof(IBackend.WeightedGatherSum)) ? 0 : Layers)
                        + (IlgpuOverrides(nameof(IBackend.WeightedGatherSumBackward)) ? 0 : Layers);
        Assert.All(gpu.History, h => Assert.Equal(expected, h.HostReads));

        // Same routing statistics, regularisers included (read with the loss).
        var (cs, gs) = (cpu.History[^1].Stats, gpu.History[^1].Stats);
        for (int l = 0; l < Layers; l++)
        {
            Assert.Equal(cs[l]!.ExpertLoad, gs[l]!.ExpertLoad);
            Assert.Equal(cs[l]!.PairsDropped, gs[l]!.PairsDropped);
            Assert.Equal(double.IsNaN(cs[l]!.AuxLoss), double.IsNaN(gs[l]!.AuxLoss));
            if (!double.IsNaN(cs[l]!.AuxLoss)) Assert.Equal(cs[l]!.AuxLoss, gs[l]!.AuxLoss, 1e-6);
            if (!double.IsNaN(cs[l]!.SparsityLoss)) Assert.Equal(cs[l]!.SparsityLoss, gs[l]!.SparsityLoss, 1e-12);
        }
    }

    // True when IlgpuBackend implements the IBackend member itself (not the composed default).
    private static bool IlgpuOverrides(string method)
    {
        var map = typeof(IlgpuBackend).GetInterfaceMap(typeof(IBackend));
        int i = Array.FindIndex(map.InterfaceMethods, m => m.Name == method);
        return map.TargetMethods[i].DeclaringType == typeof(IlgpuBackend);
    }
}
