using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using PureMoE.Moe;
using PureMoE.Moe.Models;

namespace PureMoE.Cli;

/// <summary>One router configuration of a comparison.</summary>
/// <param name="Name">Short name (file names, table rows).</param>
/// <param name="Description">What it is, for the table.</param>
/// <param name="K">Experts per token (the model's num_experts_per_tok).</param>
/// <param name="Router">The router.</param>
/// <param name="FromTopK2">C2R: start from the TopK top-2 run's checkpoint at half the steps (profile it, then continue).</param>
public sealed record CompareConfig(string Name, string Description, int K, RouterSpec Router, bool FromTopK2 = false);

/// <summary>The result of one configuration under one seed.</summary>
/// <param name="Config">The configuration.</param>
/// <param name="Seed">The seed.</param>
/// <param name="Result">The training result (for C2R: losses of the whole run, history of both halves).</param>
/// <param name="History">Per-step reports of every step of the run.</param>
/// <param name="Seconds">Wall time of the run (for C2R: the continued half only).</param>
/// <param name="PeakResidentBytes">The process's peak resident memory during the run (for C2R: the continued half), or
/// null where the peak could not be reset before it (then it would include the runs before).</param>
public sealed record CompareRun(CompareConfig Config, ulong Seed, TrainCommand.TrainResult Result, IReadOnlyList<StepReport> History, double Seconds,
    long? PeakResidentBytes = null);

/// <summary>
/// `puremoe compare`: trains the same model under each router configuration with the same data, seed, steps and
/// schedule, and writes results.md and PNG plots (loss curves, expert-load heatmaps, ReMoE sparsity and λ, C2R
/// co-activation).
/// </summary>
public static class CompareCommand
{
    /// <summary>The defaults: ROUTERS.md §7's scale (d 128, 4 layers, 8 experts, ff 256, context 128, batch 16, 400 steps).</summary>
    public static TrainOptions Full { get; } = new()
    {
        Hidden = 128, Layers = 4, Experts = 8, FeedForward = 256, Seq = 128, Batch = 16, Steps = 400, Warmup = 40,
        EvalEvery = 50, EvalBatches = 8, LearningRate = 3e-3, Heads = 4, KvHeads = 2,
    };

    /// <summary>--quick: a smaller model and fewer steps (all configurations in a few minutes on 2 cores).</summary>
    public static TrainOptions Quick { get; } = new()
    {
        Hidden = 96, Layers = 2, Experts = 8, FeedForward = 192, Seq = 128, Batch = 8, Steps = 150, Warmup = 15,
        EvalEvery = 25, EvalBatches = 4, LearningRate = 3e-3, Heads = 4, KvHeads = 2,
    };

    // Mean dispatch bytes per step (summed over layers), as KiB; "—" on one device. Only the steps the router itself
    // ran (Result.History): C2R's first half is the TopK top-2 run's and would pull its mean towards TopK's bytes.
    private static string Exchanged(IReadOnlyList<CompareRun> runs)
    {
        var bytes = runs.SelectMany(r => r.Result.History).Select(h => h.DispatchBytes).Where(b => b > 0).ToList();
        return bytes.Count == 0 ? "—" : (bytes.Average() / 1024).ToString("N0", CultureInfo.InvariantCulture) + " KiB";
    }

    private static RouterSpec R(string name, params (string Key, string Value)[] options) =>
        RouterSpec.Create(name, options.ToDictionary(o => o.Key, o => o.Value));

    /// <summary>The configurations compared (in run order: TopK top-2 comes before the C2R run that starts from it).</summary>
    public static IReadOnlyList<CompareConfig> Configs { get; } =
    [
        // Top-1 TopK weights the expert by its softmax probability (Switch Transformer); Mixtral's renormalisation
        // would make every top-1 weight 1 and leave the router no gradient but the aux loss's.
        new("topk1", "TopK top-1, dropless, aux 0.01", 1, R("topk", ("k", "1"), ("normalization", "pre_softmax"), ("aux_loss", "0.01"))),
        new("topk1-cf1", "TopK top-1, CF 1.0 (drops), aux 0.01", 1, R("topk", ("k", "1"), ("normalization", "pre_softmax"), ("capacity_factor", "1.0"), ("aux_loss", "0.01"))),
        // Rectify with both rectifications off: its weighting (w = g / sg(g), so a kept top-1 pair has the value 1 where
        // TopK's has g) and TopK's drops. The baseline that isolates what IR and FR add.
        new("rectify-off", "Rectify top-1, CF 1.0, no IR, no FR (its weighting alone)", 1, R("rectify", ("k", "1"), ("capacity_factor", "1.0"), ("intra_gpu", "false"), ("fill_in", "false"), ("aux_loss", "0.01"))),
        new("rectify-ir", "Rectify top-1, CF 1.0, IR", 1, R("rectify", ("k", "1"), ("capacity_factor", "1.0"), ("intra_gpu", "true"), ("fill_in", "false"), ("aux_loss", "0.01"))),
        new("rectify-fr-ir", "Rectify top-1, CF 1.0, FR + IR", 1, R("rectify", ("k", "1"), ("capacity_factor", "1.0"), ("intra_gpu", "true"), ("fill_in", "true"), ("aux_loss", "0.01"))),
        new("remoe", "ReMoE (ReLU, target k = 1)", 1, R("relu", ("k", "1"))),
        new("topk2", "TopK top-2, dropless, aux 0.01", 2, R("topk", ("k", "2"), ("aux_loss", "0.01"))),
        new("c2r2", "C2R top-2 (3 candidates), from TopK top-2 at half", 2, R("c2r", ("k", "2"), ("candidates", "3")), FromTopK2: true),
        // One candidate = E/P − 1 for 8 experts on 4 devices: with --devices 4 a token's two experts share a device
        // (C2R's co-located placement), the setting where the paper's exchange saving is largest.
        new("c2r2-t1", "C2R top-2 (1 candidate: E/P − 1 at E 8, P 4), from TopK top-2 at half", 2, R("c2r", ("k", "2"), ("candidates", "1")), FromTopK2: true),
    ];

    /// <summary>The command with its options.</summary>
    public static Command Build()
    {
        var quick = new Option<bool>("--quick") { Description = "small preset: d 96, 2 layers, 8 experts, ff 192, context 128, batch 8, 150 steps (flags still override)" };
        var output = new Option<string>("--out") { Description = "directory for results.md and the plots", DefaultValueFactory = _ => "compare-results" };
        var seeds = new Option<string?>("--seeds") { Description = "comma-separated seeds, each run for every configuration (default: --seed)" };
        var only = new Option<string?>("--only") { Description = "comma-separated configuration names to run (default: all: " + string.Join(",", Configs.Select(c => c.Name)) + ")" };
        var cmd = new Command("compare", "Train the same model under each router and write results.md and PNG plots") { quick, output, seeds, only };
        var flags = TrainCommand.AddRunFlags(cmd, Full);
        cmd.SetAction(r => CliErrors.Run(() =>
        {
            var values = flags.Where(f => r.GetResult(f.Option) is { Implicit: false })
                .ToDictionary(f => f.Name, f => Convert.ToString(r.GetValue<object>(f.Option.Name), CultureInfo.InvariantCulture) ?? "");
            var baseOptions = TrainOptions.FromValues(values, "compare options", r.GetValue(quick) ? Quick : Full);
            var seedList = r.GetValue(seeds) is string s
                ? s.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(x => ulong.TryParse(x, CultureInfo.InvariantCulture, out ulong v) ? v : throw new CliException($"--seeds: '{x}' is not a seed")).ToArray()
                : [baseOptions.Seed];
            var names = r.GetValue(only)?.Split(',', StringSplitOptions.RemoveEmptyEntries);
            using var cancel = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); };
            Console.CancelKeyPress += onCancel;
            try
            {
                Run(baseOptions, r.GetValue(output)!, seedList, names, Console.Out, cancel.Token, string.Join(" ", Environment.GetCommandLineArgs().Skip(1)));
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
        }));
        return cmd;
    }

    /// <summary>Runs every configuration (or those in <paramref name="only"/>) for every seed; writes results.md and plots into <paramref name="outDir"/>.</summary>
    public static IReadOnlyList<CompareRun> Run(TrainOptions baseOptions, string outDir, IReadOnlyList<ulong> seeds, IReadOnlyList<string>? only,
        TextWriter log, CancellationToken cancel = default, string? commandLine = null)
    {
        var configs = Configs.Where(c => only is null || only.Contains(c.Name)).ToList();
        if (only is not null && only.FirstOrDefault(n => Configs.All(c => c.Name != n)) is string bad)
            throw new CliException($"--only: unknown configuration '{bad}' (choose from {string.Join(", ", Configs.Select(c => c.Name))})");
        // C2R starts from the TopK top-2 run, so that run happens whenever C2R is asked for.
        if (configs.Any(c => c.FromTopK2) && configs.All(c => c.Name != "topk2")) configs.Insert(0, Configs.Single(c => c.Name == "topk2"));
        Directory.CreateDirectory(outDir);
        string work = Path.Combine(outDir, "checkpoints");
        var runs = new List<CompareRun>();
        var total = Stopwatch.StartNew();
        foreach (ulong seed in seeds)
        {
            CompareRun? topk2 = null;
            foreach (var c in configs.OrderBy(c => c.FromTopK2 ? 1 : 0))
            {
                cancel.ThrowIfCancellationRequested();
                var o = baseOptions with { Seed = seed, TopK = c.K, Router = c.Router, OutDir = null, FromDir = null, ResumeDir = null, CheckpointDir = null, SaveEvery = 0 };
                int half = Math.Max(1, o.Steps / 2);
                string ckpt = Path.Combine(work, $"{c.Name}-seed{seed}");
                if (c.Name == "topk2") o = o with { CheckpointDir = ckpt, SaveEvery = half, Keep = 0 };
                if (c.FromTopK2)
                {
                    if (topk2 is null) throw new CliException("compare: C2R needs the TopK top-2 run first");
                    o = o with { ResumeDir = TrainCheckpoint.StepDir(Path.Combine(work, $"topk2-seed{seed}"), half) };
                }
                log.WriteLine($"=== {c.Name} (seed {seed}): {c.Description}");
                // Each run's own peak memory: the last run's arrays collected, the process's high-water mark reset.
                bool peakIsThisRun = ProcessMemory.TryResetPeak();
                var clock = Stopwatch.StartNew();
                var result = TrainCommand.Run(o, new PrefixWriter(log, "  "), cancel);
                if (result.Cancelled) throw new OperationCanceledException("compare: cancelled");
                var history = c.FromTopK2 ? topk2!.History.Take(half).Concat(result.History).ToList() : result.History.ToList();
                var run = new CompareRun(c, seed, result, history, clock.Elapsed.TotalSeconds, peakIsThisRun ? result.PeakResidentBytes : null);
                if (c.Name == "topk2") topk2 = run;
                runs.Add(run);
            }
        }
        var ordered = Configs.SelectMany(c => runs.Where(r => r.Config == c)).ToList();
        File.WriteAllText(Path.Combine(outDir, "results.md"), ResultsMarkdown(ordered, baseOptions, seeds, commandLine, total.Elapsed));
        var plots = ComparePlots.Write(ordered, outDir, LossUnit(baseOptions));
        log.WriteLine($"compare: {runs.Count} runs in {total.Elapsed.TotalMinutes:F1} min; wrote {Path.Combine(outDir, "results.md")} and {plots.Count} plots");
        return ordered;
    }

    /// <summary>Summary numbers of a run's routing (means over steps and layers unless said otherwise).</summary>
    public sealed record Summary(double DropRate, double PadRate, double IrPerStep, double FillInsPerStep, double LoadCv, double ExpertsPerToken,
        double Sparsity, double Lambda);

    /// <summary>Summarises a run's per-step routing statistics.</summary>
    public static Summary Summarise(IReadOnlyList<StepReport> history)
    {
        var all = history.SelectMany(h => h.Stats.OfType<RoutingStats>()).ToList();
        if (all.Count == 0) return new Summary(0, 0, 0, 0, 0, 0, double.NaN, double.NaN);
        double drop = all.Average(s => s.PairsChosen == 0 ? 0 : (double)s.PairsDropped / s.PairsChosen);
        // Padding: computed-on-zero rows over all rows computed inside capacity (capacity · E).
        double pad = all.Average(s =>
        {
            double inCapacity = s.ExpertLoad.Sum() - s.RectifiedTokens + s.PaddedSlots;
            return inCapacity > 0 ? s.PaddedSlots / inCapacity : 0;
        });
        double ir = history.Average(h => h.Stats.OfType<RoutingStats>().Sum(s => s.RectifiedTokens));
        double fill = history.Average(h => h.Stats.OfType<RoutingStats>().Sum(s => s.FillInsUsed));
        var tail = history.Skip(history.Count * 3 / 4).SelectMany(h => h.Stats.OfType<RoutingStats>()).ToList();
        double sparsity = tail.Select(s => s.Extras.TryGetValue("sparsity", out double x) ? x : double.NaN).DefaultIfEmpty(double.NaN).Average();
        double lambda = history[^1].Stats.OfType<RoutingStats>().Select(s => s.Extras.TryGetValue("lambda", out double x) ? x : double.NaN).FirstOrDefault(double.NaN);
        return new Summary(drop, pad, ir, fill, tail.Average(s => s.LoadCv), tail.Average(s => s.ActiveExpertsPerToken), sparsity, lambda);
    }

    // What a loss is measured in: per byte for byte-level tokens, per BPE token otherwise.
    private static string LossUnit(TrainOptions o) => o.Tokenizer == "bytes" ? "nats/byte" : $"nats per {Data.TextTokenizer.Kind(o.Tokenizer)} token";

    private static string ResultsMarkdown(IReadOnlyList<CompareRun> runs, TrainOptions o, IReadOnlyList<ulong> seeds, string? commandLine, TimeSpan elapsed)
    {
        static string F(double x, string format) => double.IsFinite(x) ? x.ToString(format, CultureInfo.InvariantCulture) : "—";
        var sb = new StringBuilder();
        sb.AppendLine("# Router comparison").AppendLine();
        if (commandLine is not null) sb.AppendLine($"Command: `puremoe {commandLine}`").AppendLine();
        sb.AppendLine($"Data: {o.DataPath ?? "embedded generated corpus"}{(o.Tokenizer == "bytes" ? "" : $", {Data.TextTokenizer.Kind(o.Tokenizer)} tokens")}; model d {o.Hidden}, {o.Layers} layers, {o.Experts} experts, ff {o.FeedForward}, " +
                      $"context {o.Seq}, batch {o.Batch}{(o.Accum > 1 ? $" x {o.Accum} micro-batches" : "")}, {o.Steps} steps (≈ {(double)o.Steps * o.Batch * o.Accum * o.Seq / 1e6:F2} M tokens), AdamW lr {o.LearningRate} " +
                      $"warmup {o.Warmup} + cosine, clip {o.Clip}; seeds {string.Join(", ", seeds)}; validation on {o.EvalBatches} fixed batches; " +
                      $"{Environment.ProcessorCount} cores; total {elapsed.TotalMinutes:F1} min.").AppendLine();
        sb.AppendLine("| config | k | valid loss | train loss (last 10) | tokens/s | peak MiB | drop % | padding % | IR tokens/step | fill-ins/step | load CV | experts/token | ReMoE sparsity | ReMoE λ | bytes exchanged (--devices) |");
        sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var group in runs.GroupBy(r => r.Config))
        {
            var rs = group.ToList();
            var sums = rs.Select(r => Summarise(r.History)).ToList();
            double Mean(Func<Summary, double> f) => sums.Average(f);
            var valids = rs.Select(r => r.Result.ValidLosses[^1].Loss).ToList();
            string valid = F(valids.Average(), "F4") + (valids.Count > 1 ? $" ({string.Join(", ", valids.Select(v => F(v, "F4")))})" : "");
            double train = rs.Average(r => r.Result.TrainLosses.TakeLast(10).Average());
            double tps = rs.Average(r => r.Result.TokensPerSecond);
            double peak = rs.All(r => r.PeakResidentBytes is not null) ? rs.Max(r => r.PeakResidentBytes!.Value) / 1048576.0 : double.NaN;
            sb.AppendLine($"| {group.Key.Name}: {group.Key.Description} | {group.Key.K} | {valid} | {F(train, "F4")} | {F(tps, "N0")} | {F(peak, "N0")} | {F(100 * Mean(s => s.DropRate), "F2")} | " +
                          $"{F(100 * Mean(s => s.PadRate), "F2")} | {F(Mean(s => s.IrPerStep), "F1")} | {F(Mean(s => s.FillInsPerStep), "F1")} | {F(Mean(s => s.LoadCv), "F3")} | " +
                          $"{F(Mean(s => s.ExpertsPerToken), "F3")} | {F(Mean(s => s.Sparsity), "F3")} | {F(Mean(s => s.Lambda), "E2")} | {Exchanged(rs)} |");
        }
        sb.AppendLine();
        sb.AppendLine($"Columns: valid loss = mean next-token cross-entropy ({LossUnit(o)}) on the fixed validation batches after the last step (per-seed values in brackets); " +
                      "peak MiB = the process's peak resident memory during the run, the most over seeds (the garbage of the runs before collected first; — where it cannot be reset); " +
                      "drop % = first-choice (top-k) pairs dropped for capacity and not rectified in place (an unused fill-in candidate is not a drop); padding % = zero rows among capacity · E rows; IR tokens and fill-ins summed over layers per step; " +
                      "load CV and experts/token over the last quarter of steps; ReMoE sparsity = fraction of zero gates (last quarter), λ at the end; " +
                      "bytes exchanged = dispatch bytes per step summed over layers, each way (combine moves the same), with --devices P > 1, else —. C2R's tokens/s, peak memory and bytes are of its continued half only.");
        sb.AppendLine().AppendLine("Plots: loss.png (training loss, smoothed), valid.png, load-<config>.png (expert load per layer over steps), remoe.png, coactivation.png.");
        return sb.ToString();
    }

    private sealed class PrefixWriter(TextWriter inner, string prefix) : TextWriter
    {
        public override Encoding Encoding => inner.Encoding;
        public override void WriteLine(string? value) => inner.WriteLine(prefix + value);
        public override void Write(char value) => inner.Write(value);
    }
}
