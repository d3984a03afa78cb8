using System.Diagnostics;
using System.Globalization;
using System.Text;
using PureMoE.Backends.Ilgpu;
using PureMoE.Moe;
using PureMoE.Moe.Dispatch;
using PureMoE.Moe.Routing;

namespace PureMoE.Bench;

/// <summary>
/// `quick moe`: forward + backward of one <see cref="MoeLayer"/> (fp32, dropless, SwiGLU experts, Mixtral routing),
/// timed with the protocol shared with bench/peers/moe_torch.py: at least `warmup` untimed steps and one second of
/// warm-up, then the median of `repeats` timed steps. A step is y = layer(x); y.backward(gy) with x requiring a
/// gradient and the parameter gradients reset (set to null) before each step.
/// The headline tokens/s comes from plain steps; the per-phase breakdown comes from a separate instrumented pass
/// that runs the same phases one at a time with a detached boundary between them (each phase's backward is then
/// timed on its own), so the plain steps carry no timing code.
/// With --device cuda (or ilgpu-cpu, opencl) the layer, x and gy live on that device, every timed region ends with a
/// device synchronisation (as bench/peers/moe_torch.py --device cuda does with torch.cuda.synchronize). Each step
/// runs in a DeviceScope that reuses host memory, as `puremoe train` does, so its buffers (device or host) go back
/// to a pool for the next step.
/// </summary>
public static class MoeQuick
{
    private static readonly string[] PhaseNames = ["gate", "route", "dispatch", "experts", "combine"];

    /// <summary>Runs the measurement and prints the result.</summary>
    /// <param name="args">[--tokens T] [--d D] [--ff F] [--experts E] [--k K] [--router topk|rectify|relu|c2r] [--repeats R] [--warmup W] [--json] [--device D] [--kernel auto|tiled|medium|large] (the ILGPU SGEMM kernel the experts' GEMMs use) [--grouped auto|on|64|off] (all experts in one grouped GEMM launch per product, of 128×128 or 64×64 tiles, or one GEMM per expert).</param>
    public static int Run(QuickArgs args)
    {
        var device = BenchDevice.Parse(args.Text("device", "cpu"));
        int tokens = args.Int("tokens", 4096);
        int d = args.Int("d", 512);
        int ff = args.Int("ff", 1024);
        int experts = args.Int("experts", 8);
        int k = args.Int("k", 2);
        string routerName = args.Text("router", "topk");
        int repeats = Math.Max(1, args.Int("repeats", 10));
        int warmup = args.Int("warmup", 3);
        bool json = args.Flag("json");
        string kernelName = args.Text("kernel", "auto");
        string groupedName = args.Text("grouped", "auto");
        args.ThrowIfUnused();
        var ilgpu = device.Backend as IlgpuBackend;
        if (ilgpu is not null)
        {
            GemmDeviceQuick.ChooseKernel(ilgpu, kernelName);
            ilgpu.GroupedGemmMode = groupedName switch
            {
                "auto" => GroupedGemmChoice.Auto,
                "on" => GroupedGemmChoice.Grouped,
                "64" => GroupedGemmChoice.Grouped64,
                "off" => GroupedGemmChoice.PerGroup,
                _ => throw new ArgumentException($"--grouped {groupedName}: expected auto, on (128×128 tiles), 64 (64×64 tiles) or off"),
            };
        }
        else if (kernelName != "auto" || groupedName != "auto")
        {
            throw new ArgumentException($"--kernel {kernelName} --grouped {groupedName}: only ILGPU devices have these choices");
        }
        var (router, routerKind) = routerName switch
        {
            "topk" => MakeTopK(experts, k),
            "rectify" => ((IRouter)new RectifyRouter(experts, new RectifyOptions { K = k, CapacityFactor = 1.0 }), $"RectifyRouter(K={k},CF=1.0,IR+FR)"),
            "relu" => (new ReluRouter(experts, new ReluRouterOptions { K = k }), $"ReluRouter(target K={k})"),
            // C2R needs collaboration lists from a profiled model; cyclic lists (i + 1, i + 2, …) cost the same.
            "c2r" => (new C2RRouter(experts, new C2ROptions { K = k, Candidates = Math.Min(experts - 1, Math.Max(1, k - 1)) },
                Enumerable.Range(0, experts).Select(i => Enumerable.Range(1, experts - 1).Select(j => (i + j) % experts).ToArray()).ToArray()),
                $"C2RRouter(K={k},cyclic lists)"),
            _ => throw new ArgumentException($"--router {routerName}: expected topk, rectify, relu or c2r"),
        };
        var rng = new Rng(42);
        var layer = new MoeLayer(d, ff, router, rng, initStd: 0.02, device: device);
        var x = Tensor.Randn(new Shape(tokens, d), rng, device: device);
        x.RequiresGrad = true;
        var gy = Tensor.Randn(new Shape(tokens, d), rng, device: device);
        var parameters = layer.Parameters().ToArray();

        double lastForwardMs = 0;
        void Step()
        {
            foreach (var p in parameters)
            {
                p.Grad = null;
            }

            x.Grad = null;
            using var scope = DeviceScope.Begin(reuseHostMemory: true);
            long start = Stopwatch.GetTimestamp();
            var y = layer.Forward(x);
            BenchDevice.Sync(device);
            lastForwardMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            y.Backward(gy);
            BenchDevice.Sync(device);
        }

        // Warm-up: at least `warmup` steps and at least one second (JIT tiering, caches, thread pool).
        long warmStart = Stopwatch.GetTimestamp();
        for (int i = 0; i < warmup || Stopwatch.GetElapsedTime(warmStart).TotalSeconds < 1; i++)
        {
            Step();
        }

        var times = new double[repeats];
        var forwardTimes = new double[repeats];
        // The warm-up compiled every kernel the step uses (on a GPU the first step is mostly that); the timed steps'
        // peak device memory is what one step needs at its fullest, with the layer's weights.
        int kernelsCompiled = device.KernelsCompiled;
        double compileSeconds = device.KernelCompileTime.TotalSeconds;
        device.ResetPeakMemory();
        long launchesBefore = ilgpu?.GroupedGemmLaunches ?? 0;
        long readsBefore = device.HostReads, uploadsBefore = ilgpu?.Uploads.Uploads ?? 0, waitsBefore = ilgpu?.Uploads.Waits ?? 0;
        long queuedBefore = device.Launches;
        var byKernelBefore = device.LaunchesByKernel;
        for (int i = 0; i < repeats; i++)
        {
            long start = Stopwatch.GetTimestamp();
            Step();
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            forwardTimes[i] = lastForwardMs;
        }

        // Grouped GEMM launches per training step: 0 when every expert GEMM ran on its own.
        double groupedPerStep = ((ilgpu?.GroupedGemmLaunches ?? 0) - launchesBefore) / (double)repeats;
        // Host synchronisation per step on a device: reads (each waits for the queue), uploads and the uploads that
        // had to wait for a full staging arena (0 expected).
        double readsPerStep = (device.HostReads - readsBefore) / (double)repeats;
        double uploadsPerStep = ((ilgpu?.Uploads.Uploads ?? 0) - uploadsBefore) / (double)repeats;
        long uploadWaits = (ilgpu?.Uploads.Waits ?? 0) - waitsBefore;
        // Kernel launches, device copies and fills per step: each costs the host a few µs on a GPU.
        double launchesPerStep = (device.Launches - queuedBefore) / (double)repeats;
        // ... and by kernel, the largest first: where a step's launches go.
        var byKernel = device.LaunchesByKernel
            .Select(kv => (Name: kv.Key, PerStep: (kv.Value - byKernelBefore.GetValueOrDefault(kv.Key)) / (double)repeats))
            .Where(e => e.PerStep > 0).OrderByDescending(e => e.PerStep).ThenBy(e => e.Name, StringComparer.Ordinal).ToList();
        double medianMs = BenchDevice.Median(times);
        // Kept (token, expert) pairs per token in the last timed step: the experts' work, which ReLU routing sets by
        // its sparsity (more than k at initialisation, before its L1 penalty has acted) and capacity can lower.
        double expertsPerToken = layer.LastStats?.ActiveExpertsPerToken ?? double.NaN;
        double forwardMs = BenchDevice.Median(forwardTimes);

        // Instrumented pass: the same work phase by phase (the median of `repeats` per phase).
        var phaseTimes = new double[PhaseNames.Length, 2, repeats];
        var routeReadTimes = new double[repeats];
        var routeUploadTimes = new double[repeats];
        for (int i = 0; i < Math.Max(2, warmup) + repeats; i++)
        {
            double[,] one;
            double routeReadMs, routeUploadMs;
            using (DeviceScope.Begin(reuseHostMemory: true))
            {
                one = InstrumentedStep(layer, x, gy, parameters, device, out routeReadMs, out routeUploadMs);
            }

            if (i < Math.Max(2, warmup))
            {
                continue;
            }

            int r = i - Math.Max(2, warmup);
            routeReadTimes[r] = routeReadMs;
            routeUploadTimes[r] = routeUploadMs;
            for (int p = 0; p < PhaseNames.Length; p++)
            {
                phaseTimes[p, 0, r] = one[p, 0];
                phaseTimes[p, 1, r] = one[p, 1];
            }
        }

        var phaseMs = new double[PhaseNames.Length, 2];
        double phaseSum = 0;
        for (int p = 0; p < PhaseNames.Length; p++)
        {
            for (int dir = 0; dir < 2; dir++)
            {
                var sample = new double[repeats];
                for (int r = 0; r < repeats; r++)
                {
                    sample[r] = phaseTimes[p, dir, r];
                }

                phaseMs[p, dir] = BenchDevice.Median(sample);
                phaseSum += phaseMs[p, dir];
            }
        }

        // The route forward's host reads (waiting for the router's kernels, then the copy) and uploads, on an ILGPU
        // device: the rest of it is the host's own work (the plan) and the launches.
        double routeReadMedian = BenchDevice.Median(routeReadTimes), routeUploadMedian = BenchDevice.Median(routeUploadTimes);
        double Frac(int p) => (phaseMs[p, 0] + phaseMs[p, 1]) / medianMs;
        double overheadMs = medianMs - phaseSum;
        double glue = Frac(1) + Frac(2) + Frac(4);
        double tokensPerS = tokens / (medianMs / 1000.0);
        int threads = Environment.ProcessorCount;
        string where = BenchDevice.Describe(device);
        var stats = layer.LastStats!;

        // Whether uploads were queued from page-locked memory (else each one waited for the device).
        string staging = ilgpu is null ? "n/a" : ilgpu.UploadStagingUnavailable is { } why ? "off: " + why.Replace("\"", "'") : "on";
        var sb = new StringBuilder();
        if (json)
        {
            sb.Append(CultureInfo.InvariantCulture, $"{{\"bench\":\"moe\",\"impl\":\"puremoe\",\"router\":\"{routerKind}\",\"experts_per_token\":{expertsPerToken:F3},\"tokens\":{tokens},\"d\":{d},\"ff\":{ff},\"experts\":{experts},\"k\":{k},");
            sb.Append(CultureInfo.InvariantCulture, $"\"tokens_per_s\":{tokensPerS:F1},\"median_ms\":{medianMs:F3},\"min_ms\":{times.Min():F3},\"forward_ms\":{forwardMs:F3},\"repeats\":{repeats},\"threads\":{threads},\"device\":\"{device}\",\"accelerator\":\"{where}\",");
            sb.Append(CultureInfo.InvariantCulture, $"\"kernel\":\"{kernelName}\",\"grouped\":\"{groupedName}\",\"grouped_launches_per_step\":{groupedPerStep:F1},\"launches_per_step\":{launchesPerStep:F1},\"host_reads_per_step\":{readsPerStep:F1},\"uploads_per_step\":{uploadsPerStep:F1},\"upload_waits\":{uploadWaits},\"upload_staging\":\"{staging}\",");
            sb.Append(CultureInfo.InvariantCulture, $"\"kernels_compiled\":{kernelsCompiled},\"compile_s\":{compileSeconds:F2},\"peak_memory_mib\":{device.PeakMemoryInUse / 1048576.0:F1},");
            sb.Append("\"launches_by_kernel\":{");
            sb.AppendJoin(',', byKernel.Select(e => string.Create(CultureInfo.InvariantCulture, $"\"{e.Name}\":{e.PerStep:F1}")));
            sb.Append("},\"breakdown_ms\":{");
            for (int p = 0; p < PhaseNames.Length; p++)
            {
                sb.Append(CultureInfo.InvariantCulture, $"\"{PhaseNames[p]}_fwd\":{phaseMs[p, 0]:F3},\"{PhaseNames[p]}_bwd\":{phaseMs[p, 1]:F3},");
            }

            sb.Append(CultureInfo.InvariantCulture, $"\"route_fwd_read\":{routeReadMedian:F3},\"route_fwd_upload\":{routeUploadMedian:F3},");
            sb.Append(CultureInfo.InvariantCulture, $"\"overhead\":{overheadMs:F3}}},\"fractions\":{{");
            for (int p = 0; p < PhaseNames.Length; p++)
            {
                sb.Append(CultureInfo.InvariantCulture, $"\"{PhaseNames[p]}\":{Frac(p):F4},");
            }

            sb.Append(CultureInfo.InvariantCulture, $"\"overhead\":{overheadMs / medianMs:F4},\"route_dispatch_combine\":{glue:F4}}},");
            sb.Append(CultureInfo.InvariantCulture, $"\"max_group\":{stats.ExpertLoad.Max()},\"min_group\":{stats.ExpertLoad.Min()}}}");
        }
        else
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"moe T={tokens} d={d} ff={ff} E={experts} k={k} router={routerKind} ({expertsPerToken:F2} experts per token): median {medianMs:F1} ms fwd+bwd (forward {forwardMs:F1} ms, min {times.Min():F1}), {tokensPerS:F0} tokens/s, {threads} threads, device {device} [{where}], kernel {kernelName}, grouped {groupedName} ({groupedPerStep:F1} grouped GEMM launches per step), {launchesPerStep:F0} launches, {readsPerStep:F1} host reads and {uploadsPerStep:F1} uploads per step ({uploadWaits} waited)");
            if (device.IsIlgpu)
                sb.AppendLine(CultureInfo.InvariantCulture, $"  {kernelsCompiled} kernels compiled in {compileSeconds:F2} s (in the warm-up); peak device memory in a step {device.PeakMemoryInUse / 1048576.0:F1} MiB");
            if (byKernel.Count > 0)
                sb.AppendLine("  launches per step by kernel: " + string.Join(", ", byKernel.Select(e => string.Create(CultureInfo.InvariantCulture, $"{e.Name} {e.PerStep:F1}"))));
            for (int p = 0; p < PhaseNames.Length; p++)
            {
                sb.AppendLine(CultureInfo.InvariantCulture, $"  {PhaseNames[p],-9} fwd {phaseMs[p, 0],8:F2} ms  bwd {phaseMs[p, 1],8:F2} ms  {100 * Frac(p),5:F1}%");
            }

            if (device.IsIlgpu)
                sb.AppendLine(CultureInfo.InvariantCulture, $"  route fwd: host reads {routeReadMedian:F2} ms (the wait for its kernels, then the copy), uploads {routeUploadMedian:F2} ms, the rest host work and launches");
            sb.AppendLine(CultureInfo.InvariantCulture, $"  {"overhead",-9} {overheadMs,8:F2} ms (plain step − Σ phases)  {100 * overheadMs / medianMs,5:F1}%");
            sb.Append(CultureInfo.InvariantCulture, $"  route + dispatch + combine: {100 * glue:F1}% (with the gate matmul: {100 * (glue + Frac(0)):F1}%)");
        }

        Console.WriteLine(sb.ToString());
        return 0;
    }

    /// <summary>
    /// The layer's forward split at detached boundaries, then each phase's backward on its own, in reverse order.
    /// Returns [phase, fwd/bwd] milliseconds.
    /// </summary>
    private static double[,] InstrumentedStep(MoeLayer layer, Tensor x, Tensor gy, Tensor[] parameters, Device device,
        out double routeReadMs, out double routeUploadMs)
    {
        var ilgpu = device.Backend as IlgpuBackend;
        double Lap(ref long start)
        {
            BenchDevice.Sync(device);
            return MoeQuick.Lap(ref start);
        }

        foreach (var p in parameters)
        {
            p.Grad = null;
        }

        var ms = new double[PhaseNames.Length, 2];
        int tokens = x.Shape[0];
        long t0 = Stopwatch.GetTimestamp();

        var xg = Leaf(x);
        var logits = layer.Gate.Forward(xg);
        ms[0, 0] = Lap(ref t0);

        var logitsLeaf = Leaf(logits);
        var (readBefore, uploadBefore) = (ilgpu?.HostReadTime ?? TimeSpan.Zero, ilgpu?.UploadTime ?? TimeSpan.Zero);
        var plan = layer.Router.Route(logitsLeaf, new RoutingContext { Placement = layer.Placement, Training = layer.IsTraining });
        plan.DebugValidate();
        _ = RoutingStats.From(plan);
        ms[1, 0] = Lap(ref t0);
        routeReadMs = ((ilgpu?.HostReadTime ?? TimeSpan.Zero) - readBefore).TotalMilliseconds;
        routeUploadMs = ((ilgpu?.UploadTime ?? TimeSpan.Zero) - uploadBefore).TotalMilliseconds;

        var xd = Leaf(x);
        var layout = DispatchLayout.Build(plan, x.Device);
        var rows = layout.Gather(xd);
        ms[2, 0] = Lap(ref t0);

        var rowsLeaf = Leaf(rows);
        var expertOut = layer.Experts.Forward(rowsLeaf, layout.GroupSizes);
        ms[3, 0] = Lap(ref t0);

        var outLeaf = Leaf(expertOut);
        var weightsLeaf = Leaf(plan.Weights);
        var y = layout.Combine(outLeaf, weightsLeaf, tokens);
        ms[4, 0] = Lap(ref t0);

        y.Backward(gy);
        ms[4, 1] = Lap(ref t0);
        expertOut.Backward(outLeaf.Grad!);
        ms[3, 1] = Lap(ref t0);
        rows.Backward(rowsLeaf.Grad!);
        ms[2, 1] = Lap(ref t0);
        plan.Weights.Backward(weightsLeaf.Grad!);
        ms[1, 1] = Lap(ref t0);
        logits.Backward(logitsLeaf.Grad!);
        ms[0, 1] = Lap(ref t0);
        return ms;
    }

    private static Tensor Leaf(Tensor t)
    {
        var leaf = t.Detach();
        leaf.RequiresGrad = true;
        return leaf;
    }

    private static double Lap(ref long start)
    {
        long now = Stopwatch.GetTimestamp();
        double ms = Stopwatch.GetElapsedTime(start, now).TotalMilliseconds;
        start = now;
        return ms;
    }

    /// <summary>Mixtral routing: the engine's TopKRouter with SoftmaxRenorm (softmax over all E, top-k, renormalised), dropless.</summary>
    private static (IRouter Router, string Kind) MakeTopK(int experts, int k) =>
        (new TopKRouter(experts, new TopKOptions { K = k, Normalization = TopKNormalization.SoftmaxRenorm, CapacityFactor = null }),
            "TopKRouter(SoftmaxRenorm,dropless)");
}
