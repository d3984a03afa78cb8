using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PureMoE.Cli.Data;
using PureMoE.Models;
using PureMoE.Moe;
using PureMoE.Moe.Models;
using PureMoE.Moe.Parallel;
using PureMoE.Optim;
using Spectre.Console;

namespace PureMoE.Cli;

/// <summary>What the training loop reports after every step (for progress displays and plots).</summary>
/// <param name="Step">The step just completed (1-based).</param>
/// <param name="Steps">Total steps of the run.</param>
/// <param name="Loss">The language-model loss of the step.</param>
/// <param name="LearningRate">The learning rate the step used.</param>
/// <param name="TokensPerSecond">Training throughput of this process so far.</param>
/// <param name="Stats">Each layer's routing statistics of the step's forward.</param>
public sealed record StepReport(int Step, int Steps, double Loss, double LearningRate, double TokensPerSecond, IReadOnlyList<RoutingStats?> Stats)
{
    /// <summary>Bytes this step's dispatch sent between devices, summed over layers (0 on one device; combine moves the same).</summary>
    public long DispatchBytes { get; init; }

    /// <summary>Device → host reads during the step (<see cref="Device.HostReads"/>; 0 on the CPU).</summary>
    public long HostReads { get; init; }

    /// <summary>Kernel launches, device copies and fills the step queued (<see cref="Device.Launches"/>; 0 on the CPU).</summary>
    public long Launches { get; init; }

    /// <summary><see cref="Launches"/> by kernel (<see cref="Device.LaunchesByKernel"/>); empty on the CPU.</summary>
    public IReadOnlyDictionary<string, long> LaunchesByKernel { get; init; } = new Dictionary<string, long>();

    /// <summary>Kernels compiled during the step, on their first use (<see cref="Device.KernelsCompiled"/>; 0 on the CPU).</summary>
    public int KernelsCompiled { get; init; }

    /// <summary>Seconds of the step spent compiling them (<see cref="Device.KernelCompileTime"/>).</summary>
    public double CompileSeconds { get; init; }
}

/// <summary>`puremoe train`: trains a small Mixtral-architecture MoE language model on byte-level text.</summary>
public static class TrainCommand
{
    /// <summary>The command with its options.</summary>
    public static Command Build()
    {
        var d = new TrainOptions();
        var config = new Option<string?>("--config") { Description = "JSON file of options (keys: the flag names without dashes; flags given on the command line win)" };
        var cmd = new Command("train", "Train a small MoE language model (default: on the embedded generated corpus)") { config };
        var flags = AddRunFlags(cmd, d);
        flags.Add(("out", Add(cmd, new Option<string?>("--out") { Description = "save the final model here (a Mixtral-format directory, resumable)" })));
        flags.Add(("from", Add(cmd, new Option<string?>("--from") { Description = "start from a saved model (with --router c2r: profile it, then continue with C2R)" })));
        flags.Add(("checkpoint", Add(cmd, new Option<string?>("--checkpoint") { Description = "save resumable checkpoints under this directory (step-NNNNNN)" })));
        flags.Add(("save-every", Add(cmd, new Option<int>("--save-every") { Description = "checkpoint every N steps (0: at the end and on Ctrl-C only)" })));
        flags.Add(("keep", Add(cmd, new Option<int>("--keep") { Description = "keep the newest N step checkpoints (0: all)", DefaultValueFactory = _ => d.Keep })));
        flags.Add(("resume", Add(cmd, new Option<string?>("--resume") { Description = "continue exactly from a checkpoint (step directory, or its parent for the newest); options come from it" })));
        var router = new RouterFlags(cmd, includeK: false);
        cmd.SetAction(r => CliErrors.Run(() =>
        {
            var options = OptionsFrom(r, flags, router, r.GetValue(config));
            using var cancel = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); };
            Console.CancelKeyPress += onCancel;
            try
            {
                RunInTerminal(options, cancel.Token);
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
        }));
        return cmd;
    }

    /// <summary>Adds the flags that define a run (data, model size, optimizer, schedule) and returns them by option name.</summary>
    public static List<(string Name, Option Option)> AddRunFlags(Command cmd, TrainOptions d) =>
    [
        ("data", Add(cmd, new Option<string?>("--data") { Description = "UTF-8 text file to train on (default: the embedded generated corpus)" })),
        ("tokenizer", Add(cmd, new Option<string>("--tokenizer") { Description = "bytes (UTF-8 bytes, vocabulary 256) | gpt2 (GPT-2's BPE, 50,257 tokens) | PATH.model (a SentencePiece model, e.g. a Llama checkpoint's tokenizer.model)", DefaultValueFactory = _ => d.Tokenizer })),
        ("steps", Add(cmd, new Option<int>("--steps") { Description = "optimizer steps", DefaultValueFactory = _ => d.Steps })),
        ("batch", Add(cmd, new Option<int>("--batch") { Description = "sequences per batch (per micro-batch with --accum)", DefaultValueFactory = _ => d.Batch })),
        ("accum", Add(cmd, new Option<int>("--accum") { Description = "gradient accumulation: micro-batches of --batch sequences per optimizer step (activation memory of one)", DefaultValueFactory = _ => d.Accum })),
        ("seq", Add(cmd, new Option<int>("--seq") { Description = "tokens per sequence (context)", DefaultValueFactory = _ => d.Seq })),
        ("seed", Add(cmd, new Option<ulong>("--seed") { Description = "random seed (model init and batch order)", DefaultValueFactory = _ => d.Seed })),
        ("lr", Add(cmd, new Option<double>("--lr") { Description = "peak learning rate (AdamW, linear warmup then cosine to lr/10)", DefaultValueFactory = _ => d.LearningRate })),
        ("warmup", Add(cmd, new Option<int>("--warmup") { Description = "warmup steps", DefaultValueFactory = _ => d.Warmup })),
        ("weight-decay", Add(cmd, new Option<double>("--weight-decay") { Description = "AdamW decoupled weight decay", DefaultValueFactory = _ => d.WeightDecay })),
        ("clip", Add(cmd, new Option<double>("--clip") { Description = "clip the global gradient norm to this", DefaultValueFactory = _ => d.Clip })),
        ("layers", Add(cmd, new Option<int>("--layers") { Description = "decoder layers", DefaultValueFactory = _ => d.Layers })),
        ("hidden", Add(cmd, new Option<int>("--hidden") { Description = "model width", DefaultValueFactory = _ => d.Hidden })),
        ("ff", Add(cmd, new Option<int>("--ff") { Description = "expert (SwiGLU) width", DefaultValueFactory = _ => d.FeedForward })),
        ("heads", Add(cmd, new Option<int>("--heads") { Description = "attention heads", DefaultValueFactory = _ => d.Heads })),
        ("kv-heads", Add(cmd, new Option<int>("--kv-heads") { Description = "key/value heads", DefaultValueFactory = _ => d.KvHeads })),
        ("experts", Add(cmd, new Option<int>("--experts") { Description = "experts per layer", DefaultValueFactory = _ => d.Experts })),
        ("k", Add(cmd, new Option<int>("--k") { Description = "experts per token", DefaultValueFactory = _ => d.TopK })),
        ("tie-embeddings", Add(cmd, new Option<bool>("--tie-embeddings") { Description = "the output layer shares the embedding's weights (vocabulary × width fewer parameters; worth it for a large --tokenizer vocabulary)", DefaultValueFactory = _ => d.TieEmbeddings })),
        ("eval-every", Add(cmd, new Option<int>("--eval-every") { Description = "validate every N steps", DefaultValueFactory = _ => d.EvalEvery })),
        ("eval-batches", Add(cmd, new Option<int>("--eval-batches") { Description = "fixed validation batches per validation", DefaultValueFactory = _ => d.EvalBatches })),
        ("devices", Add(cmd, new Option<int>("--devices") { Description = "expert-parallel ranks P: each MoE layer runs on P devices (experts placed contiguously; C2R co-located): logical CPU devices with --device cpu, else P devices of --device's kind from it on (cuda:0 … cuda:P−1)", DefaultValueFactory = _ => d.Devices })),
        ("device", Add(cmd, CliDevice.Create())),
    ];

    private static Option Add(Command cmd, Option option)
    {
        cmd.Options.Add(option);
        return option;
    }

    /// <summary>
    /// Options from, in rising priority: the defaults, a checkpoint's saved options (--resume), the --config file,
    /// and the flags given on the command line.
    /// </summary>
    public static TrainOptions OptionsFrom(ParseResult r, IEnumerable<(string Name, Option Option)> flags, RouterFlags router, string? configPath)
    {
        var values = new Dictionary<string, string>();
        var given = flags.Where(f => r.GetResult(f.Option) is { Implicit: false }).ToList();
        string? resume = given.FirstOrDefault(f => f.Name == "resume").Option is Option ro ? r.GetValue((Option<string?>)ro) : null;
        if (configPath is not null)
            foreach (var (k, v) in TrainOptions.ReadConfigFile(configPath)) values[k] = v;
        resume ??= values.GetValueOrDefault("resume");
        if (resume is not null)
        {
            // The checkpoint's own options are the base; the file and the flags may change output options (or the router, to c2r).
            var saved = ReadSavedOptions(resume);
            foreach (var (k, v) in values) saved[k] = v;
            values = saved;
        }
        foreach (var (name, option) in given)
            values[name] = Convert.ToString(r.GetValue<object>(option.Name), CultureInfo.InvariantCulture) ?? "";
        foreach (var (k, v) in router.GivenValues(r)) values[k] = v;
        return TrainOptions.FromValues(values, configPath is null ? "train options" : $"--config {configPath}");
    }

    private static Dictionary<string, string> ReadSavedOptions(string dir)
    {
        string path = Path.Combine(TrainCheckpoint.Resolve(dir), TrainCheckpoint.StateFile);
        try
        {
            var root = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!;
            return root["options"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<string>());
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or NullReferenceException or InvalidOperationException)
        {
            throw new CliException($"--resume {dir}: {TrainCheckpoint.StateFile} is damaged ({e.Message}); the checkpoint cannot be resumed");
        }
    }

    /// <summary>True when a live progress bar fits: an interactive terminal, output not redirected, not CI.</summary>
    public static bool LiveTerminal =>
        !Console.IsOutputRedirected && Environment.GetEnvironmentVariable("CI") is not ("true" or "1" or "True") &&
        AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>Runs with a live Spectre.Console progress bar when the terminal allows, plain lines otherwise.</summary>
    public static TrainResult RunInTerminal(TrainOptions o, CancellationToken cancel)
    {
        if (!LiveTerminal) return Run(o, Console.Out, cancel);
        TrainResult? result = null;
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn { Width = 20 }, new PercentageColumn(),
                     new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("train", maxValue: o.Steps);
                result = Run(o, new AnsiLog(), cancel, report =>
                {
                    task.Value = report.Step;
                    task.Description = Markup.Escape($"loss {report.Loss:F3} | {report.TokensPerSecond:N0} tok/s | {Compact(report.Stats)}");
                });
            });
        return result!;
    }

    // Lines written while the progress bar is live go through Spectre so they appear above it.
    private sealed class AnsiLog : TextWriter
    {
        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;
        public override void WriteLine(string? value) => AnsiConsole.WriteLine(value ?? "");
        public override void Write(char value) => AnsiConsole.Write(value.ToString());
    }

    /// <summary>The result of a run.</summary>
    /// <param name="TrainLosses">The loss after every step (from step 1, also for a resumed run).</param>
    /// <param name="ValidLosses">The validation losses.</param>
    /// <param name="Model">The trained model.</param>
    /// <param name="History">This process's steps: per-layer routing statistics of each step (for plots).</param>
    /// <param name="TokensPerSecond">Training throughput of this process (steps run here only).</param>
    /// <param name="Cancelled">True when the run stopped early on cancellation (a checkpoint was saved).</param>
    /// <param name="CheckpointPath">The last checkpoint saved, if any.</param>
    public sealed record TrainResult(IReadOnlyList<double> TrainLosses, IReadOnlyList<(int Step, double Loss)> ValidLosses, MixtralForCausalLM Model,
        IReadOnlyList<StepReport> History, double TokensPerSecond, bool Cancelled, string? CheckpointPath)
    {
        /// <summary>
        /// Training throughput without the run's first step (which compiles a GPU's kernels and warms caches) and
        /// without validation: tokens of steps 2.. over their time. NaN with fewer than two steps.
        /// </summary>
        public double SteadyTokensPerSecond { get; init; } = double.NaN;

        /// <summary>
        /// The process's peak resident memory in bytes at the end of the run (0 for a cancelled run): since the
        /// process started, or since <c>compare</c> reset it before this run.
        /// </summary>
        public long PeakResidentBytes { get; init; }
    }

    /// <summary>Trains (the command's body; tests call it directly). Cancelling <paramref name="cancel"/> saves a checkpoint and returns.</summary>
    public static TrainResult Run(TrainOptions o, TextWriter log, CancellationToken cancel = default) => Run(o, log, cancel, null);

    /// <summary>Trains, calling <paramref name="onStep"/> after every step.</summary>
    public static TrainResult Run(TrainOptions o, TextWriter log, CancellationToken cancel, Action<StepReport>? onStep)
    {
        if (o.Devices < 1 || o.Experts % o.Devices != 0)
            throw new CliException($"--devices {o.Devices}: needs 1 ≤ P and the {o.Experts} experts to divide evenly over the P devices");
        var outOfRange = new List<string>();
        if (o.Steps < 1) outOfRange.Add($"--steps {o.Steps} (need ≥ 1)");
        if (o.Batch < 1) outOfRange.Add($"--batch {o.Batch} (need ≥ 1)");
        if (o.Accum < 1) outOfRange.Add($"--accum {o.Accum} (need ≥ 1)");
        if (o.Seq < 2) outOfRange.Add($"--seq {o.Seq} (need ≥ 2)");
        if (o.EvalEvery < 1) outOfRange.Add($"--eval-every {o.EvalEvery} (need ≥ 1)");
        if (o.EvalBatches < 1) outOfRange.Add($"--eval-batches {o.EvalBatches} (need ≥ 1)");
        if (o.Warmup < 0) outOfRange.Add($"--warmup {o.Warmup} (need ≥ 0)");
        if (!(o.Clip > 0)) outOfRange.Add($"--clip {o.Clip.ToString(System.Globalization.CultureInfo.InvariantCulture)} (need > 0)");
        if (outOfRange.Count > 0) throw new CliException("train: out of range: " + string.Join(", ", outOfRange));
        // C2R routes by collaboration lists profiled from a trained model: a run from scratch has none.
        if (o.Router.Name == "c2r" && o.FromDir is null && o.ResumeDir is null)
            throw new CliException("--router c2r: C2R routes with collaboration lists profiled from a trained model; " +
                                   "give --from DIR (a model saved by train --out, e.g. a --router topk run) or --resume a checkpoint");
        var device = CliDevice.Resolve(o.Device);
        if (o.Devices > 1 && !device.IsHost)
        {
            // Expert parallelism over P devices of --device's kind, from it on (cuda:0 … cuda:P−1): say now if one is missing.
            try { _ = DeviceGroup.Starting(device, o.Devices); }
            catch (InvalidOperationException e) { throw new CliException($"--devices {o.Devices} --device {o.Device}: {e.Message}"); }
        }
        string text = o.DataPath is null ? SyntheticCorpus.Generate(400_000, o.Seed) : ReadText(o.DataPath);
        // A resumed run's options are checked before anything else is read (a wrong one fails in a moment).
        var ck = o.ResumeDir is null ? null : TrainCheckpoint.Open(o.ResumeDir);
        if (ck is not null) CheckSameRun(o, ck);
        var data = new TokenBatches(text, RunTokenizer(o, ck));

        MixtralForCausalLM model;
        AdamW optimizer;
        var losses = new List<double>();
        var valid = new List<(int Step, double Loss)>();
        int start = 0;
        long tokens = 0;
        if (ck is not null)
        {
            model = TrainCheckpoint.LoadModel(ck, o.Devices);
            model.To(device);
            var savedRouter = MoeMixtral.SpecOf(model.Config);
            if (savedRouter != o.Router && savedRouter.ToJson() != o.Router.ToJson())
            {
                if (o.Router.Name != "c2r")
                    throw new CliException($"--resume {ck.Dir}: the checkpoint trained with router {savedRouter.ToJson()}; a resumed run may only switch to c2r (profiled), not to {o.Router.ToJson()}");
                model = SwitchToC2R(model, o, data, log, ck.Dir, device);
            }
            optimizer = NewOptimizer(model, o);
            TrainCheckpoint.LoadOptimizer(ck, optimizer);
            start = ck.State.Step;
            losses.AddRange(ck.State.TrainLosses);
            valid.AddRange(ck.State.ValidLosses);
            tokens = ck.State.Tokens;
            log.WriteLine($"resumed {ck.Dir} at step {start}");
        }
        else
        {
            var config = NewConfig(o, data.Tokenizer.VocabSize);
            model = o.FromDir is null ? MoeMixtral.Create(config, new Rng(o.Seed).Fork(), device: device, devices: o.Devices)
                : StartFrom(o, data, log, device);
            optimizer = NewOptimizer(model, o);
        }
        var schedule = new LrSchedule(o.LearningRate, Math.Min(o.Warmup, o.Steps), o.Steps, o.LearningRate / 10);
        var cfg = model.Config;
        log.WriteLine($"train: {(o.DataPath ?? "embedded corpus (" + string.Join(", ", SyntheticCorpus.Domains) + ")")}, " +
                      $"{data.TrainLength:N0} train / {data.ValidLength:N0} valid {(o.Tokenizer == "bytes" ? "bytes" : TextTokenizer.Kind(o.Tokenizer) + " tokens")}");
        log.WriteLine($"model: {cfg.NumHiddenLayers} layers, d {cfg.HiddenSize}, ff {cfg.IntermediateSize}, {cfg.NumLocalExperts} experts, " +
                      $"router {MoeMixtral.SpecOf(cfg).ToJson()}, {model.ParameterCount:N0} parameters; {o.Steps} steps of {o.Batch}x{o.Seq} tokens{(o.Accum > 1 ? $" x {o.Accum} micro-batches" : "")}, seed {o.Seed}" +
                      (device.IsHost ? "" : $", on {device}"));
        if (device.Kind is DeviceKind.IlgpuCpu or DeviceKind.IlgpuWide)
            log.WriteLine($"note: {device} is ILGPU's GPU emulator (about 0.1 GFLOP/s): it checks the GPU code path on tiny models; --device cpu is the fast CPU path");

        var history = new List<StepReport>();
        var clock = Stopwatch.StartNew();
        long tokensHere = 0;
        // Steps after this process's first, timed alone (each ends by reading its loss, so a device has finished it).
        double steadySeconds = 0;
        long steadyTokens = 0;
        string? lastCheckpoint = null;
        IReadOnlyList<RoutingStats?> lastStats = MoeMixtral.LastStats(model);
        int logEvery = Math.Max(1, Math.Min(o.EvalEvery, 10));
        TrainState State(int step) => new(step, o.ToValues(), [.. losses], [.. valid], tokens);
        string SaveCheckpoint(int step)
        {
            if (o.CheckpointDir is not null)
                return TrainCheckpoint.SaveStep(o.CheckpointDir, o.Keep, model, optimizer, State(step), lastStats, data.Tokenizer);
            string dir = o.OutDir ?? "puremoe-checkpoint";
            TrainCheckpoint.Save(dir, model, optimizer, State(step), lastStats, data.Tokenizer);
            return dir;
        }

        long stepArrayBytes = 0;
        for (int step = start + 1; step <= o.Steps; step++)
        {
            if (cancel.IsCancellationRequested)
            {
                lastCheckpoint = SaveCheckpoint(step - 1);
                log.WriteLine($"cancelled after step {step - 1}: saved {lastCheckpoint} (continue with --resume {lastCheckpoint})");
                return new TrainResult(losses, valid, model, history, tokensHere / clock.Elapsed.TotalSeconds, true, lastCheckpoint);
            }
            // The batch of a step depends only on (seed, step): the step number is the whole data position. With
            // --accum N it is N·B sequences, drawn as one batch of N·B would be, and run as N micro-batches.
            var batch = data.TrainBatch(o.Batch * o.Accum, o.Seq, BatchRng(o.Seed, step));
            // Every buffer of the step (activations, gradients) goes back to a pool at its end, and the next step
            // reuses it: the device's pool, or on the CPU the host-array pool (no fresh pages for the OS to zero).
            // Parameters and optimizer state were made outside the scope.
            long stepStart = Stopwatch.GetTimestamp();
            long readsBefore = device.HostReads, launchesBefore = device.Launches;
            var byKernelBefore = device.LaunchesByKernel;
            int compiledBefore = device.KernelsCompiled;
            var compileTimeBefore = device.KernelCompileTime;
            using (DeviceScope.Begin(reuseHostMemory: true))
            {
                model.ZeroGrad();
                var earlier = MicroBatches.RunAllButLast(model, batch, o.Accum, device);
                var loss = MicroBatches.ForwardBackward(model, MicroBatches.Micro(batch, o.Accum - 1, o.Accum), o.Accum, device);
                // On an ILGPU device the clip stays there: reading the norm would be one more synchronisation.
                if (device.IsHost) GradClip.ClipGradNorm(model.Parameters(), o.Clip);
                else GradClip.ClipGradNormOnDevice(model.Parameters(), o.Clip);
                optimizer.LearningRate = schedule.LearningRate(step);
                optimizer.Step();
                MoeMixtral.AfterOptimizerStep(model, MicroBatches.Plans(earlier, MoeMixtral.LastPlans(model)));
                var (lossValue, stats) = StepValues.Read(loss, model);
                lastStats = MicroBatches.Stats(earlier, stats, o.Accum);
                losses.Add(MicroBatches.Loss(earlier, lossValue, o.Accum));
                model.ZeroGrad();    // the gradients' buffers go back to the pool with the scope
            }
            // The host-array pool now holds exactly the arrays this step took (read before a validation's scope).
            stepArrayBytes = Math.Max(stepArrayBytes, DeviceScope.LastScopeHostBytes);
            if (step > start + 1)
            {
                steadySeconds += Stopwatch.GetElapsedTime(stepStart).TotalSeconds;
                steadyTokens += o.Batch * o.Accum * o.Seq;
            }
            tokens += o.Batch * o.Accum * o.Seq;
            tokensHere += o.Batch * o.Accum * o.Seq;
            var report = new StepReport(step, o.Steps, losses[^1], optimizer.LearningRate, tokensHere / clock.Elapsed.TotalSeconds, lastStats)
            {
                DispatchBytes = MoeMixtral.LastDispatchBytes(model),
                HostReads = device.HostReads - readsBefore,
                Launches = device.Launches - launchesBefore,
                LaunchesByKernel = Difference(device.LaunchesByKernel, byKernelBefore),
                KernelsCompiled = device.KernelsCompiled - compiledBefore,
                CompileSeconds = (device.KernelCompileTime - compileTimeBefore).TotalSeconds,
            };
            history.Add(report);
            onStep?.Invoke(report);
            bool eval = step % o.EvalEvery == 0 || step == o.Steps || step == 1;
            if (eval)
            {
                double v = Validate(model, data, o);
                valid.Add((step, v));
                log.WriteLine($"step {step,5}/{o.Steps}  loss {losses[^1]:F4}  valid {v:F4}  lr {optimizer.LearningRate:E2}  " +
                              $"{report.TokensPerSecond:N0} tok/s  {Describe(lastStats)}{Bytes(model)}{Reads(report)}");
            }
            else if (onStep is null && step % logEvery == 0)
                log.WriteLine($"step {step,5}/{o.Steps}  loss {losses[^1]:F4}  lr {optimizer.LearningRate:E2}  {report.TokensPerSecond:N0} tok/s  {Describe(lastStats)}");
            if (o.SaveEvery > 0 && step % o.SaveEvery == 0 && step < o.Steps)
                lastCheckpoint = SaveCheckpoint(step);
        }
        double tps = tokensHere / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
        double steady = steadyTokens > 0 ? steadyTokens / Math.Max(steadySeconds, 1e-9) : double.NaN;
        if (losses.Count > 0 && valid.Count > 0)
            log.WriteLine($"done in {clock.Elapsed.TotalSeconds:F1} s ({tps:N0} tok/s" +
                          (double.IsNaN(steady) ? "" : $"; {steady:N0} tok/s after the first step, validation excluded") +
                          $"): loss {losses[0]:F4} -> {losses[^1]:F4}, valid {valid[0].Loss:F4} -> {valid[^1].Loss:F4}");
        // The process's high-water mark of resident memory (VmHWM on Linux): what a user sizing a machine needs.
        long peakResident = ProcessMemory.PeakResidentBytes;
        log.WriteLine($"host memory: peak {peakResident / 1048576.0:N0} MiB resident (the whole process: " +
                      (device.IsHost
                          ? $"parameters, optimizer state, a step's arrays, the .NET runtime); a step's arrays {stepArrayBytes / 1048576.0:N1} MiB"
                          : "host copies, staging buffers, the .NET runtime)"));
        if (history.Count > 0 && history[^1].LaunchesByKernel.Count > 0)
            log.WriteLine($"last step's launches by kernel: {TopKernels(history[^1].LaunchesByKernel)}");
        if (device.IsIlgpu)
            log.WriteLine($"device memory: peak {device.PeakMemoryInUse / 1048576.0:F1} MiB in use (parameters, optimizer state, " +
                          $"a step's activations and gradients), {device.MemoryReserved / 1048576.0:F1} MiB taken from {device}");
        if (device.KernelsCompiled > 0)
            log.WriteLine($"kernels: {device.KernelsCompiled} compiled for {device} in {device.KernelCompileTime.TotalSeconds:F1} s, " +
                          "each once, on its first use (most in the first step)");
        if (device.UploadStagingUnavailable is { } why) log.WriteLine($"note: {why}");
        if (o.CheckpointDir is not null) lastCheckpoint = TrainCheckpoint.SaveStep(o.CheckpointDir, o.Keep, model, optimizer, State(o.Steps), lastStats, data.Tokenizer);
        if (o.OutDir is not null)
        {
            TrainCheckpoint.Save(o.OutDir, model, optimizer, State(o.Steps), lastStats, data.Tokenizer);
            log.WriteLine($"saved {o.OutDir}");
        }
        return new TrainResult(losses, valid, model, history, tps, false, lastCheckpoint) { SteadyTokensPerSecond = steady, PeakResidentBytes = peakResident };
    }

    // Device → host reads of the step on an ILGPU device (each one a synchronisation), and the work it queued.
    // and the kernels it compiled (on their first use: a first step on a GPU is mostly compiling).
    private static string Reads(StepReport report)
    {
        var parts = new List<string>();
        if (report.HostReads > 0) parts.Add($"{report.HostReads} host reads, {report.Launches:N0} launches/step");
        if (report.KernelsCompiled > 0) parts.Add($"{report.KernelsCompiled} kernels compiled ({report.CompileSeconds:F1} s)");
        return parts.Count > 0 ? "  " + string.Join(", ", parts) : "";
    }

    // Counts that grew between two snapshots of Device.LaunchesByKernel.
    private static Dictionary<string, long> Difference(IReadOnlyDictionary<string, long> after, IReadOnlyDictionary<string, long> before) =>
        after.Select(kv => (kv.Key, Count: kv.Value - before.GetValueOrDefault(kv.Key)))
            .Where(e => e.Count > 0).ToDictionary(e => e.Key, e => e.Count);

    // "adamW 41, binary Mul 60, ..., 12 others 30": the largest counts first, so the line says where a step's launches go.
    private static string TopKernels(IReadOnlyDictionary<string, long> byKernel, int shown = 12)
    {
        var sorted = byKernel.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        var text = string.Join(", ", sorted.Take(shown).Select(kv => $"{kv.Key} {kv.Value}"));
        return sorted.Count > shown ? $"{text}, {sorted.Count - shown} others {sorted.Skip(shown).Sum(kv => kv.Value)}" : text;
    }

    // Bytes the last step's dispatch moved between devices (with --devices P > 1).
    private static string Bytes(MixtralForCausalLM model) =>
        MoeMixtral.LastDispatchBytes(model) is long b && b > 0 ? $"  exchanged {b / 1024.0:N0} KiB/step each way" : "";

    /// <summary>The generator of step <paramref name="step"/>'s batch: a pure function of seed and step.</summary>
    public static Rng BatchRng(ulong seed, int step) => new(unchecked(seed * 0x9E3779B97F4A7C15UL + (ulong)step * 0xD1B54A32D192ED03UL + 0x632BE59BD9B4E019UL));

    private static MixtralConfig NewConfig(TrainOptions o, int vocabSize)
    {
        var config = new MixtralConfig
        {
            VocabSize = vocabSize,
            HiddenSize = o.Hidden,
            IntermediateSize = o.FeedForward,
            NumHiddenLayers = o.Layers,
            NumAttentionHeads = o.Heads,
            NumKeyValueHeads = o.KvHeads,
            NumLocalExperts = o.Experts,
            NumExpertsPerTok = o.TopK,
            MaxPositionEmbeddings = Math.Max(o.Seq, 128),
            RouterJson = o.Router.ToJson(),
            TieWordEmbeddings = o.TieEmbeddings,
        };
        try
        {
            config.Validate("train options");
        }
        catch (InvalidDataException e)
        {
            // The config names its keys as config.json does; the user typed flags: say the flags.
            string message = e.Message;
            foreach (var (key, flag) in ConfigKeyFlags) message = message.Replace($"'{key}'", flag).Replace(key, flag);
            throw new CliException(message);
        }
        return config;
    }

    // The config.json keys NewConfig sets from flags, and those flags.
    private static readonly (string Key, string Flag)[] ConfigKeyFlags =
    [
        ("hidden_size", "--hidden"), ("intermediate_size", "--ff"), ("num_hidden_layers", "--layers"),
        ("num_attention_heads", "--heads"), ("num_key_value_heads", "--kv-heads"), ("num_local_experts", "--experts"),
        ("num_experts_per_tok", "--k"), ("max_position_embeddings", "--seq"),
    ];

    // The run's tokenizer. A resumed run whose SentencePiece model is gone from where it was takes the checkpoint's
    // own copy (saved as tokenizer.model): a checkpoint resumes on its own.
    private static TextTokenizer RunTokenizer(TrainOptions o, TrainCheckpoint.Found? ck)
    {
        string copy = ck is null ? "" : Path.Combine(ck.Dir, TextTokenizer.SentencePieceFile);
        return ck is not null && TextTokenizer.Kind(o.Tokenizer) == "sentencepiece" && !File.Exists(o.Tokenizer) && File.Exists(copy)
            ? TextTokenizer.FromSentencePiece(copy)
            : TextTokenizer.Create(o.Tokenizer);
    }

    private static AdamW NewOptimizer(MixtralForCausalLM model, TrainOptions o) => new(model.Parameters(), o.LearningRate, weightDecay: o.WeightDecay);

    // A resumed run must be the same run: every run-defining option as saved (the router may switch to c2r).
    private static void CheckSameRun(TrainOptions o, TrainCheckpoint.Found ck)
    {
        var now = o.ToValues();
        foreach (string name in TrainOptions.RunNames)
        {
            string? a = ck.State.Options.GetValueOrDefault(name), b = now.GetValueOrDefault(name);
            if (a != b)
                throw new CliException($"--resume {ck.Dir}: option {name} is {b ?? "(unset)"} but the checkpoint was trained with {a ?? "(unset)"}; a resumed run keeps its options");
        }
    }

    private static MixtralForCausalLM SwitchToC2R(MixtralForCausalLM start, TrainOptions o, TokenBatches data, TextWriter log, string from, Device device)
    {
        var profileRng = new Rng(o.Seed + 1);
        var batches = Enumerable.Range(0, 8).Select(_ => data.TrainBatch(o.Batch, o.Seq, profileRng).To(start.Model.EmbedTokens.Weight.Device)).ToArray();
        var profiles = MoeMixtral.Profile(start, batches);
        log.WriteLine($"c2r: profiled {from} on {batches.Length * o.Batch * o.Seq:N0} tokens");
        var config = start.Config with { RouterJson = o.Router.ToJson() };
        var model = MoeMixtral.Create(config, new Rng(o.Seed), device: device, profiles: profiles, devices: o.Devices);
        model.LoadStateDict(start.StateDict());
        return model;
    }

    private static double Validate(MixtralForCausalLM model, TokenBatches data, TrainOptions o)
    {
        using var _ = Tensor.NoGrad();
        model.Eval();
        try
        {
            double sum = 0;
            int n = 0;
            var device = model.Model.EmbedTokens.Weight.Device;
            // The same windows for any --accum (batches of B·N sequences), each run as N micro-batches of B.
            foreach (var b in data.ValidBatches(o.EvalBatches, o.Batch * o.Accum, o.Seq))
                for (int m = 0; m < o.Accum; m++)
                {
                    using var scope = DeviceScope.Begin(reuseHostMemory: true);
                    sum += model.Loss(MicroBatches.Micro(b, m, o.Accum).To(device)).Item();
                    n++;
                }
            return sum / n;
        }
        finally
        {
            model.Train();
        }
    }

    /// <summary>One line of routing statistics averaged over layers: drops, load balance, experts per token, ReMoE's λ.</summary>
    public static string Describe(IReadOnlyList<RoutingStats?> stats)
    {
        var s = stats.OfType<RoutingStats>().ToArray();
        if (s.Length == 0) return "";
        double drop = s.Average(x => x.PairsChosen == 0 ? 0 : (double)x.PairsDropped / x.PairsChosen);
        string line = $"drop {drop:P1}  cv {s.Average(x => x.LoadCv):F2}  experts/token {s.Average(x => x.ActiveExpertsPerToken):F2}";
        if (s.Sum(x => x.RectifiedTokens) > 0 || s.Sum(x => x.FillInsUsed) > 0)
            line += $"  ir {s.Sum(x => x.RectifiedTokens)}  fill-ins {s.Sum(x => x.FillInsUsed)}";
        if (s[0].Extras.TryGetValue("lambda", out double lambda)) line += $"  λ {lambda:E1}";
        return line;
    }

    // The short form for the progress bar's line: drops, balance, experts per token, IR/fill-ins, λ.
    private static string Compact(IReadOnlyList<RoutingStats?> stats)
    {
        var s = stats.OfType<RoutingStats>().ToArray();
        if (s.Length == 0) return "";
        double drop = s.Average(x => x.PairsChosen == 0 ? 0 : (double)x.PairsDropped / x.PairsChosen);
        string line = $"drop {drop:P0} cv {s.Average(x => x.LoadCv):F2} e/tok {s.Average(x => x.ActiveExpertsPerToken):F2}";
        if (s.Sum(x => x.RectifiedTokens) > 0 || s.Sum(x => x.FillInsUsed) > 0) line += $" ir {s.Sum(x => x.RectifiedTokens)} fill {s.Sum(x => x.FillInsUsed)}";
        if (s[0].Extras.TryGetValue("lambda", out double lambda)) line += $" λ {lambda:E1}";
        return line;
    }

    // --from: continue from a saved model; for C2R, profile it on training batches and route with its lists.
    private static MixtralForCausalLM StartFrom(TrainOptions o, TokenBatches data, TextWriter log, Device device)
    {
        CliErrors.RequireModelDirectory("--from", o.FromDir!);
        var start = MoeMixtral.Load(o.FromDir!);
        if (o.Router.Name != "c2r")
            throw new CliException("--from is for continuing with --router c2r (profiled from the saved model)");
        string saved = TextTokenizer.ForModel(o.FromDir!, start.Config.VocabSize).Name;
        if (saved != TextTokenizer.Kind(o.Tokenizer))
            throw new CliException($"--from {o.FromDir}: the model was trained with --tokenizer {saved}, not {o.Tokenizer}");
        return SwitchToC2R(start, o, data, log, o.FromDir!, device);
    }

    private static string ReadText(string path)
    {
        if (!File.Exists(path)) throw new CliException($"--data {path}: no such file");
        return File.ReadAllText(path);
    }
}
