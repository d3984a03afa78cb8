using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using PureMoE.Cli.Data;
using PureMoE.IO;
using PureMoE.Models;
using PureMoE.Moe;
using PureMoE.Moe.Models;
using PureMoE.Optim;

namespace PureMoE.Cli;

/// <summary>Where a run stands between two steps: everything besides the weights that resuming needs.</summary>
/// <param name="Step">Optimizer steps completed.</param>
/// <param name="Options">The run-defining options (<see cref="TrainOptions.ToValues"/>).</param>
/// <param name="TrainLosses">The training loss of every completed step.</param>
/// <param name="ValidLosses">The validation losses so far.</param>
/// <param name="Tokens">Training tokens seen.</param>
public sealed record TrainState(int Step, Dictionary<string, string> Options, List<double> TrainLosses, List<(int Step, double Loss)> ValidLosses, long Tokens);

/// <summary>
/// Resumable training checkpoints. A checkpoint is a Mixtral-format model directory (config.json with its router,
/// model.safetensors with the router state) plus optimizer.safetensors (AdamW state), trainer_state.json (step,
/// options, losses; the batch order is a function of seed and step, so the step is the whole data position) and
/// router_stats.json (the last step's routing statistics per layer), and puremoe_tokenizer.json when the run's tokens
/// are not bytes (<see cref="TextTokenizer"/>). The whole directory is written to a temporary
/// sibling and renamed into place, so a crash or a failed save leaves the previous checkpoint as it was.
/// </summary>
public static class TrainCheckpoint
{
    /// <summary>The trainer state file.</summary>
    public const string StateFile = "trainer_state.json";
    /// <summary>The optimizer state file.</summary>
    public const string OptimizerFile = "optimizer.safetensors";
    /// <summary>The per-layer routing statistics file (read by `puremoe inspect`).</summary>
    public const string StatsFile = "router_stats.json";

    /// <summary>The name of the checkpoint directory of a step under a checkpoint parent directory.</summary>
    public static string StepDir(string parent, int step) => Path.Combine(parent, $"step-{step.ToString("D6", CultureInfo.InvariantCulture)}");

    /// <summary>Saves a checkpoint into <paramref name="dir"/> atomically (replacing what is there only once all is written).</summary>
    public static void Save(string dir, MixtralForCausalLM model, AdamW optimizer, TrainState state, IReadOnlyList<RoutingStats?> stats, TextTokenizer tokenizer)
    {
        AtomicDirectory.Write(dir, temp =>
        {
            MoeMixtral.Save(model, temp);
            tokenizer.SaveTo(temp);
            TensorIO.Save(Path.Combine(temp, OptimizerFile), optimizer.StateDict(copy: false)); // written before the next step
            File.WriteAllText(Path.Combine(temp, StatsFile), StatsJson(stats).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            File.WriteAllText(Path.Combine(temp, StateFile), StateJson(state).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        });
    }

    /// <summary>Saves step checkpoint <c>parent/step-NNNNNN</c> and removes the oldest beyond <paramref name="keep"/> (0 keeps all).</summary>
    public static string SaveStep(string parent, int keep, MixtralForCausalLM model, AdamW optimizer, TrainState state, IReadOnlyList<RoutingStats?> stats, TextTokenizer tokenizer)
    {
        string dir = StepDir(parent, state.Step);
        Save(dir, model, optimizer, state, stats, tokenizer);
        if (keep > 0)
            foreach (string old in StepDirs(parent).SkipLast(keep)) Directory.Delete(old, recursive: true);
        return dir;
    }

    /// <summary>The complete step checkpoints under <paramref name="parent"/>, oldest first.</summary>
    public static IReadOnlyList<string> StepDirs(string parent) => !Directory.Exists(parent) ? [] :
        Directory.GetDirectories(parent, "step-*").Where(d => File.Exists(Path.Combine(d, StateFile)))
            .OrderBy(d => d, StringComparer.Ordinal).ToArray();

    /// <summary>A checkpoint directory itself, or the newest step checkpoint under it.</summary>
    public static string Resolve(string dir)
    {
        if (!Directory.Exists(dir)) throw new CliException($"--resume {dir}: no such checkpoint directory");
        if (File.Exists(Path.Combine(dir, StateFile))) return dir;
        return StepDirs(dir) is { Count: > 0 } steps ? steps[^1]
            : throw new CliException($"--resume {dir}: not a training checkpoint (no {StateFile}, and no step-NNNNNN checkpoints inside)");
    }

    /// <summary>A checkpoint on disk whose trainer state has been read; its weights are read by <see cref="LoadModel"/> and
    /// <see cref="LoadOptimizer"/>, after the caller has checked the state (a wrong option fails before 1 GB is read).</summary>
    public sealed record Found(string Dir, TrainState State);

    /// <summary>Finds a checkpoint and reads its trainer state; a missing or damaged one is a <see cref="CliException"/> naming the directory.</summary>
    public static Found Open(string dirOrParent)
    {
        string dir = Resolve(dirOrParent);
        try
        {
            return new Found(dir, ParseState(File.ReadAllText(Path.Combine(dir, StateFile))));
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or KeyNotFoundException or NullReferenceException or IOException)
        {
            throw new CliException($"--resume {dir}: {StateFile} is damaged ({e.Message}); the checkpoint cannot be resumed");
        }
    }

    /// <summary>The checkpoint's model (on the host), with <paramref name="devices"/> expert-parallel ranks.</summary>
    public static MixtralForCausalLM LoadModel(Found checkpoint, int devices = 1)
    {
        try
        {
            return MoeMixtral.Load(checkpoint.Dir, devices: devices);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new CliException($"--resume {checkpoint.Dir}: the model weights cannot be loaded ({e.Message})");
        }
    }

    /// <summary>
    /// Restores <paramref name="optimizer"/> from the checkpoint's optimizer state, each moment read from the file
    /// straight into the optimizer's own tensor; a missing or damaged file, or state that does not fit the model, is a
    /// <see cref="CliException"/> and leaves the optimizer as it was.
    /// </summary>
    public static void LoadOptimizer(Found checkpoint, AdamW optimizer)
    {
        string path = Path.Combine(checkpoint.Dir, OptimizerFile);
        try
        {
            if (!File.Exists(path)) throw new FileNotFoundException($"{OptimizerFile} is missing");
            using var file = SafetensorsFile.Open(path);
            optimizer.LoadStateDict(file);
        }
        catch (ArgumentException e)
        {
            throw new CliException($"--resume {checkpoint.Dir}: the optimizer state does not fit the model ({e.Message})");
        }
        catch (Exception e) when (e is not OperationCanceledException and not CliException)
        {
            throw new CliException($"--resume {checkpoint.Dir}: the optimizer state cannot be loaded ({e.Message})");
        }
    }

    private static JsonObject StateJson(TrainState s)
    {
        var options = new JsonObject();
        foreach (var (k, v) in s.Options.OrderBy(kv => kv.Key, StringComparer.Ordinal)) options[k] = v;
        return new JsonObject
        {
            ["step"] = s.Step,
            ["tokens"] = s.Tokens,
            ["options"] = options,
            // Doubles print in their shortest round-trip form, so the losses come back bit for bit.
            ["train_losses"] = new JsonArray(s.TrainLosses.Select(x => (JsonNode?)JsonValue.Create(x)).ToArray()),
            ["valid_losses"] = new JsonArray(s.ValidLosses.Select(v => (JsonNode?)new JsonArray(v.Step, v.Loss)).ToArray()),
        };
    }

    private static TrainState ParseState(string json)
    {
        var root = JsonNode.Parse(json) as JsonObject ?? throw new FormatException("not a JSON object");
        var options = (root["options"] as JsonObject ?? throw new FormatException("no options"))
            .ToDictionary(kv => kv.Key, kv => kv.Value?.GetValue<string>() ?? throw new FormatException($"option {kv.Key} is null"));
        var losses = (root["train_losses"] as JsonArray ?? throw new FormatException("no train_losses")).Select(n => n!.GetValue<double>()).ToList();
        var valid = (root["valid_losses"] as JsonArray ?? throw new FormatException("no valid_losses"))
            .Select(n => (n![0]!.GetValue<int>(), n[1]!.GetValue<double>())).ToList();
        int step = root["step"]?.GetValue<int>() ?? throw new FormatException("no step");
        if (losses.Count != step) throw new FormatException($"step {step} but {losses.Count} losses");
        return new TrainState(step, options, losses, valid, root["tokens"]?.GetValue<long>() ?? 0);
    }

    /// <summary>Per-layer routing statistics as JSON (NaN as null): what `inspect` prints.</summary>
    public static JsonArray StatsJson(IReadOnlyList<RoutingStats?> stats)
    {
        static JsonNode? Num(double x) => double.IsFinite(x) ? JsonValue.Create(x) : null;
        var layers = new JsonArray();
        foreach (var s in stats)
        {
            if (s is null) { layers.Add(null); continue; }
            var extras = new JsonObject();
            foreach (var (k, v) in s.Extras) extras[k] = Num(v);
            layers.Add(new JsonObject
            {
                ["tokens"] = s.Tokens,
                ["experts"] = s.Experts,
                ["pairs_chosen"] = s.PairsChosen,
                ["pairs_dropped"] = s.PairsDropped,
                ["tokens_dropped"] = s.TokensDropped,
                ["padded_slots"] = s.PaddedSlots,
                ["fill_in_candidates"] = s.FillInCandidates,
                ["fill_ins"] = s.FillInsUsed,
                ["rectified_tokens"] = s.RectifiedTokens,
                ["expert_load"] = new JsonArray(s.ExpertLoad.Select(x => (JsonNode?)x).ToArray()),
                ["load_cv"] = Num(s.LoadCv),
                ["experts_per_token"] = Num(s.ActiveExpertsPerToken),
                ["aux_loss"] = Num(s.AuxLoss),
                ["z_loss"] = Num(s.ZLoss),
                ["sparsity_loss"] = Num(s.SparsityLoss),
                ["extras"] = extras,
            });
        }
        return layers;
    }
}
