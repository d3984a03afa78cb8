using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using PureMoE.Moe.Models;

namespace PureMoE.Cli;

/// <summary>
/// Everything a training run depends on (the command's options). The same options come from flags, from a JSON
/// config file (<c>--config FILE</c>, keys are the flag names without dashes: <c>{"steps": 400, "router": "rectify",
/// "capacity-factor": 1.0}</c>) and from a checkpoint's trainer_state.json; <see cref="ToValues"/> and
/// <see cref="FromValues"/> convert to and from that name → text form.
/// </summary>
public sealed record TrainOptions
{
    /// <summary>A UTF-8 text file to train on; null for the embedded generated corpus.</summary>
    public string? DataPath { get; init; }
    /// <summary>Optimizer steps.</summary>
    public int Steps { get; init; } = 300;
    /// <summary>Sequences per batch (per micro-batch when <see cref="Accum"/> &gt; 1).</summary>
    public int Batch { get; init; } = 16;
    /// <summary>How the text becomes tokens: "bytes" (vocabulary 256), "gpt2" (GPT-2's BPE, 50,257 tokens) or a SentencePiece .model path.</summary>
    public string Tokenizer { get; init; } = "bytes";
    /// <summary>The output layer shares the embedding's weights (tie_word_embeddings): V·d fewer parameters.</summary>
    public bool TieEmbeddings { get; init; }
    /// <summary>Gradient accumulation: micro-batches of <see cref="Batch"/> sequences per optimizer step.</summary>
    public int Accum { get; init; } = 1;
    /// <summary>Tokens per sequence.</summary>
    public int Seq { get; init; } = 64;
    /// <summary>Seed of the model init and the batch order.</summary>
    public ulong Seed { get; init; } = 1;
    /// <summary>Peak learning rate.</summary>
    public double LearningRate { get; init; } = 3e-3;
    /// <summary>Warmup steps.</summary>
    public int Warmup { get; init; } = 30;
    /// <summary>AdamW's decoupled weight decay.</summary>
    public double WeightDecay { get; init; } = 0.1;
    /// <summary>Global gradient-norm clip.</summary>
    public double Clip { get; init; } = 1.0;
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
    /// <summary>Fixed validation batches per validation.</summary>
    public int EvalBatches { get; init; } = 4;
    /// <summary>Where to save the final checkpoint (a Mixtral-format directory); null to skip.</summary>
    public string? OutDir { get; init; }
    /// <summary>The router of every MoE layer (default: Mixtral's softmax-top-k-renormalise, dropless).</summary>
    public RouterSpec Router { get; init; } = RouterSpec.MixtralDefault;
    /// <summary>Start from this saved model's weights (for C2R: profile it first, then continue with C2R).</summary>
    public string? FromDir { get; init; }
    /// <summary>Save a resumable checkpoint under this directory (step-NNNNNN sub-directories).</summary>
    public string? CheckpointDir { get; init; }
    /// <summary>Save a checkpoint every this many steps (0: only on cancellation and at the end).</summary>
    public int SaveEvery { get; init; }
    /// <summary>Keep this many newest step checkpoints (0: keep all).</summary>
    public int Keep { get; init; } = 3;
    /// <summary>Continue exactly from a checkpoint (a step-NNNNNN directory, or its parent for the newest).</summary>
    public string? ResumeDir { get; init; }
    /// <summary>Expert-parallel ranks (only 1 until the exchange lands).</summary>
    public int Devices { get; init; } = 1;
    /// <summary>
    /// Where the model trains (<see cref="PureMoE.Device.Parse"/> forms: cpu, ilgpu-cpu, ilgpu-wide, cuda, cuda:N, opencl:N).
    /// Not part of the run's identity: a checkpoint resumes on any device.
    /// </summary>
    public string Device { get; init; } = "cpu";

    // ------------------------------------------------------------------ name → text form

    /// <summary>The option names that define the run (what a resumed run must keep; saved in checkpoints).</summary>
    public static IReadOnlyList<string> RunNames { get; } =
    [
        "data", "tokenizer", "steps", "batch", "accum", "seq", "seed", "lr", "warmup", "weight-decay", "clip", "hidden", "ff", "layers", "heads",
        "kv-heads", "experts", "k", "tie-embeddings", "eval-every", "eval-batches", "devices",
    ];

    /// <summary>Options about where output goes and where the run executes (not part of the run's identity).</summary>
    public static IReadOnlyList<string> OutputNames { get; } = ["out", "from", "checkpoint", "save-every", "keep", "resume", "device"];

    /// <summary>The run-defining options as name → text (invariant culture), plus "router" as its JSON object.</summary>
    public Dictionary<string, string> ToValues()
    {
        string I(IFormattable v) => v.ToString(null, CultureInfo.InvariantCulture);
        var d = new Dictionary<string, string>
        {
            ["steps"] = I(Steps), ["batch"] = I(Batch), ["seq"] = I(Seq), ["seed"] = I(Seed), ["lr"] = I(LearningRate),
            ["warmup"] = I(Warmup), ["weight-decay"] = I(WeightDecay), ["clip"] = I(Clip), ["hidden"] = I(Hidden),
            ["ff"] = I(FeedForward), ["layers"] = I(Layers), ["heads"] = I(Heads), ["kv-heads"] = I(KvHeads),
            ["experts"] = I(Experts), ["k"] = I(TopK), ["eval-every"] = I(EvalEvery), ["eval-batches"] = I(EvalBatches),
            ["devices"] = I(Devices), ["router"] = Router.ToJson(),
        };
        if (DataPath is not null) d["data"] = DataPath;
        // Only when used, so checkpoints from before --accum existed still resume (their runs had one micro-batch).
        if (Accum != 1) d["accum"] = I(Accum);
        if (Tokenizer != "bytes") d["tokenizer"] = Tokenizer;
        if (TieEmbeddings) d["tie-embeddings"] = "true";
        return d;
    }

    /// <summary>
    /// Options from name → text: run options, output options, "router" (a name or a JSON object) and router options
    /// (--capacity-factor or capacity_factor). Unknown names are an error naming the source.
    /// </summary>
    public static TrainOptions FromValues(IReadOnlyDictionary<string, string> values, string source, TrainOptions? start = null)
    {
        var o = start ?? new TrainOptions();
        var routerOptions = new Dictionary<string, string>(o.Router.Options);
        string routerName = o.Router.Name;
        // "k" is the model's experts per token (num_experts_per_tok); the router's own k defaults to it and is set
        // only inside a "router" object.
        var routerKnown = RouterSpec.KnownOptions.Values.SelectMany(x => x).Where(x => x != "k").ToHashSet();
        foreach (var (rawKey, v) in values.OrderBy(kv => kv.Key == "router" ? 0 : 1))
        {
            string key = rawKey.Replace('_', '-').ToLowerInvariant();
            int Int() => int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) ? i : throw new CliException($"{source}: {key} = '{v}' is not an integer");
            double Dbl() => double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double x) ? x : throw new CliException($"{source}: {key} = '{v}' is not a number");
            string? Path() => v.Length == 0 ? null : v;
            o = key switch
            {
                "data" => o with { DataPath = Path() },
                "tokenizer" => o with { Tokenizer = v },
                "tie-embeddings" => o with { TieEmbeddings = bool.TryParse(v, out bool tie) ? tie : throw new CliException($"{source}: tie-embeddings = '{v}' is not true or false") },
                "steps" => o with { Steps = Int() },
                "batch" => o with { Batch = Int() },
                "accum" => o with { Accum = Int() },
                "seq" => o with { Seq = Int() },
                "seed" => o with { Seed = ulong.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out ulong s) ? s : throw new CliException($"{source}: seed = '{v}' is not a non-negative integer") },
                "lr" => o with { LearningRate = Dbl() },
                "warmup" => o with { Warmup = Int() },
                "weight-decay" => o with { WeightDecay = Dbl() },
                "clip" => o with { Clip = Dbl() },
                "hidden" => o with { Hidden = Int() },
                "ff" => o with { FeedForward = Int() },
                "layers" => o with { Layers = Int() },
                "heads" => o with { Heads = Int() },
                "kv-heads" => o with { KvHeads = Int() },
                "experts" => o with { Experts = Int() },
                "k" => o with { TopK = Int() },
                "eval-every" => o with { EvalEvery = Int() },
                "eval-batches" => o with { EvalBatches = Int() },
                "devices" => o with { Devices = Int() },
                "out" => o with { OutDir = Path() },
                "from" => o with { FromDir = Path() },
                "checkpoint" => o with { CheckpointDir = Path() },
                "save-every" => o with { SaveEvery = Int() },
                "keep" => o with { Keep = Int() },
                "resume" => o with { ResumeDir = Path() },
                "device" => o with { Device = v },
                "router" => o,
                _ when routerKnown.Contains(key.Replace('-', '_')) => o,
                _ => throw new CliException($"{source}: unknown option '{rawKey}' (options: {string.Join(", ", RunNames.Concat(OutputNames).Append("router"))}, and the router options)"),
            };
            if (key == "router")
            {
                if (v.TrimStart().StartsWith('{'))
                {
                    var spec = RouterSpec.Parse(v, source + " router");
                    routerName = spec.Name;
                    routerOptions = new Dictionary<string, string>(spec.Options);
                }
                else if (v != routerName)
                {
                    routerName = v;
                    routerOptions.Clear();   // another router: options of the old one do not carry over
                }
            }
            else if (routerKnown.Contains(key.Replace('-', '_')))
                routerOptions[key.Replace('-', '_')] = v;
        }
        return o with { Router = RouterSpec.Create(routerName, routerOptions, source) };
    }

    /// <summary>Reads a JSON config file: an object whose keys are option names (values: numbers, strings, booleans, or for "router" an object).</summary>
    public static Dictionary<string, string> ReadConfigFile(string path)
    {
        if (!File.Exists(path)) throw new CliException($"--config {path}: no such file");
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new CliException($"--config {path}: not valid JSON: {e.Message}"); }
        if (root is not JsonObject obj) throw new CliException($"--config {path}: must be a JSON object of option names");
        var values = new List<KeyValuePair<string, string>>();
        foreach (var (key, node) in obj)
        {
            if (node is null) continue;
            string text = node switch
            {
                JsonObject o => o.ToJsonString(),
                _ when node.GetValueKind() == JsonValueKind.String => node.GetValue<string>(),
                _ => node.ToJsonString(),
            };
            values.Add(new(key, text));
        }
        // The router's name first, so its options given before it in the file are not cleared by it.
        return values.OrderBy(kv => kv.Key == "router" ? 0 : 1).ToDictionary(kv => kv.Key, kv => kv.Value);
    }
}
