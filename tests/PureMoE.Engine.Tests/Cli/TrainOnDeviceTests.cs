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
[Trait("Device", "IlgpuCpu")]
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
    public void TrainingOnIlgpuCpuMatchesTheCpuAndReadsTheHostOncePerMoeLayer(string router) => CheckAgainstCpu(router, "ilgpu-cpu");

    [Theory]
    [MemberData(nameof(Routers))]
    [Trait("Device", "Cuda")]
    public void TrainingOnCudaMatchesTheCpuAndReadsTheHostOncePerMoeLayer(string router)
    {
        int count;
        try { count = IlgpuDevices.CudaCount; } catch (Exception) { count = 0; }
        Assert.SkipUnless(count > 0, "no CUDA device on this machine");
        CheckAgainstCpu(router, "cuda");
    }

    private void CheckAgainstCpu(string router, string device)
    {
        var ct = TestContext.Current.CancellationToken;
        var cpu = TrainCommand.Run(Options(router, "cpu"), TextWriter.Null, ct);
        var uploads = ((IlgpuBackend)Device.Parse(device).Backend).Uploads;
        long waitsBefore = uploads.Waits, uploadsBefore = uploads.Uploads;
        var clock = Stopwatch.StartNew();
        var gpu = TrainCommand.Run(Options(router, device), TextWriter.Null, ct);
        // Uploads (batches, layouts, tile tables, ...) are queued through the staging arena and never wait for the device.
        Assert.Equal(waitsBefore, uploads.Waits);
        output.WriteLine($"{router}: {uploads.Uploads - uploadsBefore} uploads in the run, none waited");
        output.WriteLine($"{router}: {device} run {clock.Elapsed.TotalSeconds:F1} s; losses cpu {string.Join(", ", cpu.TrainLosses)} / {device} {string.Join(", ", gpu.TrainLosses)}; " +
                         $"host reads per step {string.Join(", ", gpu.History.Select(h => h.HostReads))}");

        // Same losses to a relative 1e-4: training, validation (float32 kernels summing in another order).
        Assert.Equal(2, gpu.TrainLosses.Count);
        for (int i = 0; i < cpu.TrainLosses.Count; i++)
            Assert.True(Math.Abs(gpu.TrainLosses[i] - cpu.TrainLosses[i]) <= 1e-4 * Math.Abs(cpu.TrainLosses[i]),
                $"{router} step {i + 1}: loss {gpu.TrainLosses[i]} on {device}, {cpu.TrainLosses[i]} on the cpu");
        Assert.Equal(cpu.ValidLosses.Count, gpu.ValidLosses.Count);
        for (int i = 0; i < cpu.ValidLosses.Count; i++)
            Assert.True(Math.Abs(gpu.ValidLosses[i].Loss - cpu.ValidLosses[i].Loss) <= 1e-4 * cpu.ValidLosses[i].Loss,
                $"{router} validation {i}: {gpu.ValidLosses[i].Loss} vs {cpu.ValidLosses[i].Loss}");
        // The model lives on the device; the CPU run reads no device.
        Assert.All(gpu.Model.Parameters(), p => Assert.Equal(Device.Parse(device), p.Device));
        Assert.All(cpu.History, h => Assert.Equal(0, h.HostReads));

        // Device → host reads of one step, allowed:
        //   1 per MoE layer in the forward: the routing decision, which the dispatch sizes (rows per expert) and
        //     capacity slots depend on; each router packs all it needs into that one read (HostRead.Doubles);
        //   1 at the end of the step: the loss, with each layer's regulariser values for the statistics;
        //   none in the backward, the gradient clip (on the device) or AdamW.
        long expected = Layers + 1;
        Assert.All(gpu.History, h => Assert.Equal(expected, h.HostReads));

        // Where a step's launches go (Device.LaunchesByKernel): the counts add up to the total, and the optimizer's
        // are multi-tensor: AdamW and the clip's two passes take a launch per 16 parameters, not one per parameter.
        var last = gpu.History[^1];
        Assert.Equal(last.Launches, last.LaunchesByKernel.Values.Sum());
        int perSixteen = (gpu.Model.Parameters().Count() + 15) / 16;
        foreach (var kernel in new[] { "foreachAdamW", "foreachScale", "foreachSumOfSquares" })
            Assert.InRange(last.LaunchesByKernel.GetValueOrDefault(kernel), 1, perSixteen);
        Assert.False(last.LaunchesByKernel.ContainsKey("adamW"));
        // Kernels are compiled once per device, on first use: a steady step compiles none.
        Assert.Equal(0, last.KernelsCompiled);
        Assert.True(Device.Parse(device).KernelsCompiled > 0);

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

    [Fact]
    public void ATrainingStepOnTheCudaShapedEmulatorMatchesTheCpu() => CheckOneStepWithGroupedGemms("ilgpu-wide");

    [Fact]
    [Trait("Device", "Cuda")]
    public void ATrainingStepOnCudaWithGroupedGemmsMatchesTheCpu()
    {
        int count;
        try { count = IlgpuDevices.CudaCount; } catch (Exception) { count = 0; }
        Assert.SkipUnless(count > 0, "no CUDA device on this machine");
        CheckOneStepWithGroupedGemms("cuda");
    }

    private void CheckOneStepWithGroupedGemms(string device)
    {
        // ilgpu-wide takes the kernels a GPU takes (64×64 SGEMM, grouped GEMMs, each expert product one launch)
        // where ilgpu-cpu's 16-thread groups take the tiled SGEMM and a launch per expert. Auto chooses, as it does
        // by default. One step at batch 1: the emulator's 256-thread groups cost it ~50 ms a launch. Loss,
        // validation after the update, and every parameter after the clip and AdamW, against the CPU.
        var backend = (IlgpuBackend)Device.Parse(device).Backend;
        Assert.Equal(GroupedGemmChoice.Auto, backend.GroupedGemmMode);
        var o = Tiny(Spec("topk"), "cpu") with { Steps = 1, Batch = 1 };
        var ct = TestContext.Current.CancellationToken;
        var cpu = TrainCommand.Run(o, TextWriter.Null, ct);
        var gpu = TrainCommand.Run(o with { Device = device }, TextWriter.Null, ct);

        Assert.Equal(cpu.TrainLosses[0], gpu.TrainLosses[0], 1e-4 * cpu.TrainLosses[0]);
        Assert.Equal(cpu.ValidLosses[0].Loss, gpu.ValidLosses[0].Loss, 1e-4 * cpu.ValidLosses[0].Loss);
        var expected = cpu.Model.StateDict();
        // Adam's first step moves each weight by about lr·sign(g): a near-zero gradient whose sign differs in float
        // noise moves it apart by up to ~lr·|g|/ε. The emulator runs .NET's float math; a GPU contracts into FMAs.
        double tolerance = device == "cuda" ? 1e-4 : 1e-5;
        foreach (var (name, t) in gpu.Model.StateDict())
        {
            Assert.Equal(Device.Parse(device), t.Device);
            var (a, b) = (t.ToFloatArray(), expected[name].ToFloatArray());
            for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= tolerance, $"{name}[{i}]: {a[i]} on {device}, {b[i]} on the cpu");
        }
        var kernels = gpu.History[^1].LaunchesByKernel;
        output.WriteLine(string.Join(", ", kernels.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {kv.Value}")));
        long grouped = kernels.GetValueOrDefault("sgemmGrouped") + kernels.GetValueOrDefault("sgemmGrouped64");
        Assert.True(kernels.ContainsKey("sgemm64") && grouped > 0, "the GPU's GEMM kernels ran");
        Assert.False(kernels.ContainsKey("sgemm"), "no tiled SGEMM (the kernel for accelerators without 256-thread groups)");
    }

    [Fact]
    public void GradientAccumulationHoldsTheActivationsOfOneMicroBatch()
    {
        // --accum 4 of 2 sequences against one batch of 8: the same step, a quarter of the activations alive at once.
        var device = Device.IlgpuCpu;
        (long Peak, double Loss) Step(TrainOptions o)
        {
            Finalizers.Settle();
            long before = device.MemoryInUse;
            device.ResetPeakMemory();
            var result = TrainCommand.Run(o, TextWriter.Null, TestContext.Current.CancellationToken);
            return (device.PeakMemoryInUse - before, result.TrainLosses[0]);
        }
        var o = Tiny(Spec("relu"), "ilgpu-cpu") with { Steps = 1, Layers = 1, Batch = 8, Seq = 32 };
        var whole = Step(o);
        var split = Step(o with { Batch = 2, Accum = 4 });
        output.WriteLine($"peak device memory of the step: one batch of 8 {whole.Peak:N0} B, 4 micro-batches of 2 {split.Peak:N0} B");
        Assert.Equal(whole.Loss, split.Loss, 1e-5);
        Assert.True(split.Peak < 0.5 * whole.Peak, $"{split.Peak:N0} B with --accum 4, {whole.Peak:N0} B without");
    }

    [Fact]
    public void ADeviceStepReturnsEveryBufferItAllocatesToThePool()
    {
        var pool = ((IlgpuBackend)Device.IlgpuCpu.Backend).Pool;
        var after = new List<(long Leased, long Allocations)>();
        var o = Tiny(Spec("relu"), "ilgpu-cpu") with { Steps = 3, Layers = 1, EvalEvery = 100 };
        TrainCommand.Run(o, TextWriter.Null, TestContext.Current.CancellationToken, _ =>
        {
            // Buffers dropped by other tests return through finalizers; let them land before measuring.
            Finalizers.Settle();
            after.Add((pool.LeasedBytes, pool.Allocations));
        });
        // Step 1 creates AdamW's moments (outside the scope, for good); from then on a step leases nothing for
        // longer than itself, and allocates nothing new: the pool's free lists serve it.
        Assert.Equal(after[1], after[2]);
    }

    [Fact]
    public void CliTrainsOnIlgpuCpuLikeTheCpuAndItsCheckpointLoadsOnTheCpu()
    {
        string cpuDir = Path.Combine(_dir, "cpu"), gpuDir = Path.Combine(_dir, "gpu");
        var (cpuCode, _, _) = Cli(["train", .. TinyArgs, "--out", cpuDir]);
        var (gpuCode, gpuOut, gpuErr) = Cli(["train", .. TinyArgs, "--device", "ilgpu-cpu", "--out", gpuDir]);
        Assert.Equal(0, cpuCode);
        Assert.True(gpuCode == 0, gpuErr);
        Assert.Contains("on ilgpu-cpu", gpuOut);
        Assert.Matches("last step's launches by kernel: .*sgemm [0-9]+", gpuOut);
        Assert.Matches("kernels: [1-9][0-9]* compiled for ilgpu-cpu in [0-9.]+ s", gpuOut);
        var memory = System.Text.RegularExpressions.Regex.Match(gpuOut, @"device memory: peak ([0-9.]+) MiB in use .*, ([0-9.]+) MiB taken from ilgpu-cpu");
        Assert.True(memory.Success, gpuOut);
        Assert.True(double.Parse(memory.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) > 0, memory.Value);
        var (cpuLosses, gpuLosses) = (Losses(cpuDir), Losses(gpuDir));
        Assert.Equal(2, gpuLosses.Length);
        for (int i = 0; i < 2; i++) Assert.Equal(cpuLosses[i], gpuLosses[i], 1e-4 * cpuLosses[i]);
        // The device run's checkpoint is ordinary host data: it loads on the CPU with the CPU run's weights (to float32 noise).
        var fromGpu = MoeMixtral.Load(gpuDir);
        var fromCpu = MoeMixtral.Load(cpuDir).StateDict();
        foreach (var (name, t) in fromGpu.StateDict())
        {
            Assert.Equal(Device.Cpu, t.Device);
            var (a, b) = (t.ToFloatArray(), fromCpu[name].ToFloatArray());
            for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-4, $"{name}[{i}]: {a[i]} vs {b[i]}");
        }
        // generate and eval run there too: greedy text and the loss as on the CPU.
        Assert.Equal(GenerateCommand.Run(gpuDir, "ab", 3, 0, 1, 1), GenerateCommand.Run(gpuDir, "ab", 3, 0, 1, 1, "ilgpu-cpu"));
        string ids = Path.Combine(_dir, "ids.safetensors");
        PureMoE.IO.TensorIO.Save(ids, [new("input_ids", Tensor.FromArray(new long[] { 1, 2, 3, 4, 5, 6 }, 1, 6))]);
        var (cpuEval, gpuEval) = (Path.Combine(_dir, "cpu-eval.safetensors"), Path.Combine(_dir, "gpu-eval.safetensors"));
        EvalCommand.Run(gpuDir, ids, cpuEval, false, TextWriter.Null);
        EvalCommand.Run(gpuDir, ids, gpuEval, false, TextWriter.Null, "ilgpu-cpu");
        double EvalLoss(string path) => PureMoE.IO.TensorIO.Load(path)["loss"].Item();
        Assert.Equal(EvalLoss(cpuEval), EvalLoss(gpuEval), 1e-4 * EvalLoss(cpuEval));
    }

    [Fact]
    public void CliNamesAMissingDeviceAndRejectsAMalformedOne()
    {
        bool cuda;
        try { cuda = IlgpuDevices.CudaCount > 0; } catch (Exception) { cuda = false; }
        if (!cuda)
        {
            var (code, _, err) = Cli(["train", "--device", "cuda", "--steps", "1"]);
            Assert.Equal(1, code);
            string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));   // one line, no stack trace
            Assert.StartsWith("error: --device cuda: no such device on this machine", line);
            Assert.Contains("ILGPU devices here: " + IlgpuDevices.Describe(), line);
        }
        var (bogusCode, _, bogusErr) = Cli(["train", "--device", "bogus"]);
        Assert.NotEqual(0, bogusCode);
        Assert.Contains("--device bogus: unknown device 'bogus': expected one of " + Device.ParseForms, bogusErr);
        if (!cuda)
        {
            var (epCode, _, epErr) = Cli(["train", "--device", "cuda", "--devices", "2", "--steps", "1"]);
            Assert.Equal(1, epCode);
            Assert.StartsWith("error: --device cuda: no such device on this machine", epErr.Trim());
        }
    }

    [Fact]
    public void CliTrainsExpertParallelOnTwoIlgpuDevicesLikeOneCpu()
    {
        // --devices 2 --device ilgpu-cpu: each MoE layer on ilgpu-cpu:0 and ilgpu-cpu:1 (separate accelerators, the
        // exchange copying between them), the rest of the model on ilgpu-cpu:0; same losses as one CPU device.
        string cpuDir = Path.Combine(_dir, "cpu1"), epDir = Path.Combine(_dir, "ep2");
        var (cpuCode, _, cpuErr) = Cli(["train", .. TinyArgs, "--out", cpuDir]);
        var (epCode, epOut, epErr) = Cli(["train", .. TinyArgs, "--device", "ilgpu-cpu", "--devices", "2", "--out", epDir]);
        Assert.True(cpuCode == 0, cpuErr);
        Assert.True(epCode == 0, epErr);
        Assert.Contains("on ilgpu-cpu", epOut);
        var (cpuLosses, epLosses) = (Losses(cpuDir), Losses(epDir));
        Assert.Equal(2, epLosses.Length);
        for (int i = 0; i < 2; i++) Assert.Equal(cpuLosses[i], epLosses[i], 1e-4 * cpuLosses[i]);
        var (badCode, _, badErr) = Cli(["train", .. TinyArgs, "--device", "ilgpu-cpu", "--devices", "3"]);
        Assert.Equal(1, badCode);
        Assert.Contains("--devices 3: needs 1 ≤ P and the 4 experts to divide evenly", badErr);
    }

    [Fact]
    public void CliTrainsExpertParallelOnTwoCpuRanksWithReusedHostMemoryLikeOneCpu()
    {
        // Large enough (4·32 tokens × 32 wide) that the step's arrays go through the host-array pool, so the
        // rank tasks' buffers and the exchange's are reused from step to step; same losses as one CPU rank.
        string[] args = ["--steps", "4", "--batch", "4", "--seq", "32", "--hidden", "32", "--ff", "64", "--layers", "2",
            "--heads", "2", "--kv-heads", "1", "--experts", "4", "--k", "2", "--eval-batches", "1", "--warmup", "1"];
        string oneDir = Path.Combine(_dir, "cpu-one"), twoDir = Path.Combine(_dir, "cpu-two");
        var (oneCode, _, oneErr) = Cli(["train", .. args, "--out", oneDir]);
        var (twoCode, _, twoErr) = Cli(["train", .. args, "--devices", "2", "--out", twoDir]);
        Assert.True(oneCode == 0, oneErr);
        Assert.True(twoCode == 0, twoErr);
        var (one, two) = (Losses(oneDir), Losses(twoDir));
        Assert.Equal(4, two.Length);
        for (int i = 0; i < 4; i++) Assert.Equal(one[i], two[i], 1e-4 * one[i]);
    }

    [Fact]
    public void DeviceParseAcceptsTheNamesDevicesPrintAndListsTheFormsOtherwise()
    {
        foreach (var d in new[] { Device.Cpu, Device.CpuReference, Device.IlgpuCpu, Device.IlgpuWide }) Assert.Same(d, Device.Parse(d.ToString()));
        Assert.Same(Device.IlgpuCpu, Device.Parse(" ILGPU-CPU "));
        Assert.Same(Device.IlgpuCpu, Device.Parse("ilgpu-cpu:0"));
        Assert.Same(Device.IlgpuCpuAt(1), Device.Parse(Device.IlgpuCpuAt(1).ToString()));
        Assert.Equal("ilgpu-wide", Device.IlgpuWide.ToString());
        Assert.Same(Device.IlgpuWide, Device.Parse("ilgpu-wide:0"));
        Assert.True(Device.IlgpuWide.IsIlgpu && !Device.IlgpuWide.IsHost);
        Assert.NotEqual(Device.IlgpuCpu, Device.IlgpuWide);
        // The CUDA-shaped emulator: 256-thread groups of 32-lane warps, as the backend sees a CUDA GPU.
        var wide = (IlgpuBackend)Device.IlgpuWide.Backend;
        Assert.Equal((256, 32), (wide.GroupSize, wide.WarpSize));
        foreach (string bad in new[] { "", "gpu", "cuda:", "cuda:-1", "cuda:x", "cpu:1", "opencl:1:2" })
        {
            var e = Assert.Throws<ArgumentException>(() => Device.Parse(bad));
            Assert.Contains("expected one of " + Device.ParseForms, e.Message);
        }
        var missing = Assert.Throws<InvalidOperationException>(() => Device.Parse("cuda:99"));
        Assert.Contains("ILGPU devices here", missing.Message);
    }

    // The tiny model of the command-line tests: 2 steps, 1 layer, 4 experts (the emulator is slow).
    private static readonly string[] TinyArgs = ["--steps", "2", "--batch", "2", "--seq", "8", "--hidden", "16", "--ff", "32", "--layers", "1",
        "--heads", "2", "--kv-heads", "1", "--experts", "4", "--k", "2", "--eval-batches", "1", "--warmup", "1"];

    // The per-step training losses a run wrote into its checkpoint state.
    private static double[] Losses(string dir) => System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, TrainCheckpoint.StateFile)))!
        ["train_losses"]!.AsArray().Select(n => n!.GetValue<double>()).ToArray();

    // Runs the command line with stdout and stderr captured (the ILGPU collection runs one test at a time).
    private static (int Code, string Out, string Err) Cli(string[] args)
    {
        var (savedOut, savedErr) = (Console.Out, Console.Error);
        var (o, e) = (new StringWriter(), new StringWriter());
        Console.SetOut(o);
        Console.SetError(e);
        try { return (PureMoE.Cli.Program.Main(args), o.ToString(), e.ToString()); }
        finally { Console.SetOut(savedOut); Console.SetError(savedErr); }
    }
}
