using System.CommandLine;
using System.Diagnostics;
using PureMoE.Cli.Data;
using PureMoE.Models;
using PureMoE.Moe;
using PureMoE.Moe.Models;
using PureMoE.Optim;

namespace PureMoE.Cli;

/// <summary>Everything a training run depends on (the command's options).</summary>
public sealed record TrainOptions
{
    /// <summary>A UTF-8 text file to train on; null for the embedded generated corpus.</summary>
    public string? DataPath { get; init; }
    /// <summary>Optimizer steps.</summary>
    public int Steps { get; init; } = 300;
    /// <summary>Sequences per batch.</summary>
    public int Batch { get; init; } = 16;
    /// <summary>Tokens per sequence.</summary>
    public int Seq { get; init; } = 64;
    /// <summary>Seed of the model init and the batch order.</summary>
    public ulong Seed { get; init; } = 1;
    /// <summary>Peak learning rate.</summary>
    public double LearningRate { get; init; } = 3e-3;
    /// <summary>Warmup steps.</summary>
    public int Warmup { get; init; } = 30;
    /// <summary>Model width.</summary>
    public int Hidden { get; init; } = 64;
    /// <summary>Expert MLP width.</summary>
    public int FeedForward { get; init; } = 128;
    /// <summary>Decoder layers.</summary>
    public int Layers { get; init; } = 2;
    /// <summary>Attention heads.</summary>
    public int Heads { get; init; } = 4;
    /// <summary>Key/value heads (grouped-query attention).</summary>
    public int KvHeads { get; init; } = 2;
    /// <summary>Experts per MoE layer.</summary>
    public int Experts { get; init; } = 4;
    /// <summary>Experts per token.</summary>
    public int TopK { get; init; } = 2;
    /// <summary>Validate every this many steps.</summary>
    public int EvalEvery { get; init; } = 50;
    /// <summary>Where to save the final checkpoint (a Mixtral-format directory); null to skip.</summary>
    public string? OutDir { get; init; }
    /// <summary>The router of every MoE layer (default: Mixtral's softmax-top-k-renormalise, dropless).</summary>
    public RouterSpec Router { get; init; } = RouterSpec.MixtralDefault;
    /// <summary>Start from this saved model's weights (for C2R: profile it first, then continue with C2R).</summary>
    public string? FromDir { get; init; }
}

/// <summary>`puremoe train`: trains a small Mixtral-architecture MoE language model on byte-level text.</summary>
public static class TrainCommand
{
    /// <summary>The command with its options.</summary>
    public static Command Build()
    {
        var data = new Option<string?>("--data") { Description = "UTF-8 text file to train on (default: the embedded generated corpus)" };
        var steps = new Option<int>("--steps") { Description = "optimizer steps", DefaultValueFactory = _ => new TrainOptions().Steps };
        var batch = new Option<int>("--batch") { Description = "sequences per batch", DefaultValueFactory = _ => new TrainOptions().Batch };
        var seq = new Option<int>("--seq") { Description = "tokens per sequence", DefaultValueFactory = _ => new TrainOptions().Seq };
        var seed = new Option<ulong>("--seed") { Description = "random seed", DefaultValueFactory = _ => new TrainOptions().Seed };
        var lr = new Option<double>("--lr") { Description = "peak learning rate", DefaultValueFactory = _ => new TrainOptions().LearningRate };
        var layers = new Option<int>("--layers") { Description = "decoder layers", DefaultValueFactory = _ => new TrainOptions().Layers };
        var hidden = new Option<int>("--hidden") { Description = "model width", DefaultValueFactory = _ => new TrainOptions().Hidden };
        var experts = new Option<int>("--experts") { Description = "experts per layer", DefaultValueFactory = _ => new TrainOptions().Experts };
        var topk = new Option<int>("--k") { Description = "experts per token", DefaultValueFactory = _ => new TrainOptions().TopK };
        var output = new Option<string?>("--out") { Description = "save the trained model here (Mixtral-format directory)" };
        var from = new Option<string?>("--from") { Description = "start from a saved model (with --router c2r: profile it, then continue with C2R)" };
        var cmd = new Command("train", "Train a small MoE language model (default: on the embedded generated corpus)")
        {
            data, steps, batch, seq, seed, lr, layers, hidden, experts, topk, output, from,
        };
        var router = new RouterFlags(cmd, includeK: false);
        cmd.SetAction(r => CliErrors.Run(() => Run(new TrainOptions
        {
            DataPath = r.GetValue(data),
            Steps = r.GetValue(steps),
            Batch = r.GetValue(batch),
            Seq = r.GetValue(seq),
            Seed = r.GetValue(seed),
            LearningRate = r.GetValue(lr),
            Layers = r.GetValue(layers),
            Hidden = r.GetValue(hidden),
            Experts = r.GetValue(experts),
            TopK = r.GetValue(topk),
            OutDir = r.GetValue(output),
            FromDir = r.GetValue(from),
            Router = router.Spec(r),
        }, Console.Out)));
        return cmd;
    }

    /// <summary>The result of a run: the loss after every step and the validation losses.</summary>
    public sealed record TrainResult(IReadOnlyList<double> TrainLosses, IReadOnlyList<(int Step, double Loss)> ValidLosses, MixtralForCausalLM Model);

    /// <summary>Trains (the command's body; tests call it directly).</summary>
    public static TrainResult Run(TrainOptions o, TextWriter log)
    {
        string text = o.DataPath is null ? SyntheticCorpus.Generate(400_000, o.Seed) : ReadText(o.DataPath);
        var data = new TokenBatches(text);
        var config = new MixtralConfig
        {
            VocabSize = TokenBatches.VocabSize,
            HiddenSize = o.Hidden,
            IntermediateSize = o.FeedForward,
            NumHiddenLayers = o.Layers,
            NumAttentionHeads = o.Heads,
            NumKeyValueHeads = o.KvHeads,
            NumLocalExperts = o.Experts,
            NumExpertsPerTok = o.TopK,
            MaxPositionEmbeddings = Math.Max(o.Seq, 128),
            RouterJson = o.Router.ToJson(),
        };
        config.Validate("train options");
        var rng = new Rng(o.Seed);
        var model = o.FromDir is null ? MoeMixtral.Create(config, rng.Fork()) : StartFrom(o, data, log);
        config = model.Config;
        var optimizer = new AdamW(model.Parameters(), o.LearningRate, weightDecay: 0.1);
        var schedule = new LrSchedule(o.LearningRate, Math.Min(o.Warmup, o.Steps), o.Steps, o.LearningRate / 10);
        var batchRng = rng.Fork();
        log.WriteLine($"train: {(o.DataPath ?? "embedded corpus (" + string.Join(", ", SyntheticCorpus.Domains) + ")")}, " +
                      $"{data.TrainLength:N0} train / {data.ValidLength:N0} valid bytes");
        log.WriteLine($"model: {config.NumHiddenLayers} layers, d {config.HiddenSize}, {config.NumLocalExperts} experts top-{config.NumExpertsPerTok}, " +
                      $"{model.ParameterCount:N0} parameters; {o.Steps} steps of {o.Batch}x{o.Seq} tokens, seed {o.Seed}");

        var losses = new List<double>();
        var valid = new List<(int, double)>();
        var clock = Stopwatch.StartNew();
        long tokens = 0;
        for (int step = 1; step <= o.Steps; step++)
        {
            var batch = data.TrainBatch(o.Batch, o.Seq, batchRng);
            model.ZeroGrad();
            var loss = model.Loss(batch);
            // The routers' regularisers (aux, z, ReMoE's sparsity loss) join the language-model loss.
            var total = model.RegularizationLoss() is Tensor reg ? loss.Add(reg) : loss;
            total.Backward();
            GradClip.ClipGradNorm(model.Parameters(), 1.0);
            optimizer.LearningRate = schedule.LearningRate(step);
            optimizer.Step();
            MoeMixtral.AfterOptimizerStep(model);
            losses.Add(loss.Item());
            tokens += o.Batch * o.Seq;
            if (step % o.EvalEvery == 0 || step == o.Steps || step == 1)
            {
                string routing = Describe(MoeMixtral.LastStats(model));
                double v = Validate(model, data, o);
                valid.Add((step, v));
                log.WriteLine($"step {step,5}/{o.Steps}  loss {losses[^1]:F4}  valid {v:F4}  lr {optimizer.LearningRate:E2}  " +
                              $"{tokens / clock.Elapsed.TotalSeconds:N0} tok/s  {routing}");
            }
        }
        log.WriteLine($"done in {clock.Elapsed.TotalSeconds:F1} s: loss {losses[0]:F4} -> {losses[^1]:F4}, valid {valid[0].Item2:F4} -> {valid[^1].Item2:F4}");
        if (o.OutDir is not null)
        {
            MoeMixtral.Save(model, o.OutDir);
            log.WriteLine($"saved {o.OutDir}");
        }
        return new TrainResult(losses, valid, model);
    }

    private static double Validate(MixtralForCausalLM model, TokenBatches data, TrainOptions o)
    {
        using var _ = Tensor.NoGrad();
        model.Eval();
        try
        {
            double sum = 0;
            int n = 0;
            foreach (var b in data.ValidBatches(4, o.Batch, o.Seq)) { sum += model.Loss(b).Item(); n++; }
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

    // --from: continue from a saved model; for C2R, profile it on training batches and route with its lists.
    private static MixtralForCausalLM StartFrom(TrainOptions o, TokenBatches data, TextWriter log)
    {
        var start = MoeMixtral.Load(o.FromDir!);
        if (o.Router.Name != "c2r")
            throw new CliException("--from is for continuing with --router c2r (profiled from the saved model)");
        var profileRng = new Rng(o.Seed + 1);
        var batches = Enumerable.Range(0, 8).Select(_ => data.TrainBatch(o.Batch, o.Seq, profileRng)).ToArray();
        var profiles = MoeMixtral.Profile(start, batches);
        log.WriteLine($"c2r: profiled {o.FromDir} on {batches.Length * o.Batch * o.Seq:N0} tokens");
        var config = start.Config with { RouterJson = o.Router.ToJson() };
        var model = MoeMixtral.Create(config, new Rng(o.Seed), profiles: profiles);
        model.LoadStateDict(start.StateDict());
        return model;
    }

    private static string ReadText(string path)
    {
        if (!File.Exists(path)) throw new CliException($"--data {path}: no such file");
        return File.ReadAllText(path);
    }
}
