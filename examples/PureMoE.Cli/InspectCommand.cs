using System.CommandLine;
using System.Text.Json.Nodes;
using PureMoE.Models;
using PureMoE.Moe.Models;

namespace PureMoE.Cli;

/// <summary>
/// `puremoe inspect --model DIR`: the architecture, parameter count, router and its options, training position and
/// the per-layer routing statistics saved with the checkpoint.
/// </summary>
public static class InspectCommand
{
    /// <summary>The command with its options.</summary>
    public static Command Build()
    {
        var model = new Option<string>("--model") { Description = "model or checkpoint directory", Required = true };
        var cmd = new Command("inspect", "Show a model's config, size, router and saved routing statistics") { model };
        cmd.SetAction(r => CliErrors.Run(() => Run(r.GetValue(model)!, Console.Out)));
        return cmd;
    }

    /// <summary>Prints the description (the command's body; tests call it directly).</summary>
    public static void Run(string dir, TextWriter log)
    {
        CliErrors.RequireModelDirectory("--model", dir);
        var config = MixtralConfig.Load(Path.Combine(dir, "config.json"));
        var spec = MoeMixtral.SpecOf(config);
        var model = MoeMixtral.Load(dir);
        log.WriteLine($"model: {dir}");
        log.WriteLine($"  architecture: {config.NumHiddenLayers} layers, hidden {config.HiddenSize}, expert ff {config.IntermediateSize}, " +
                      $"{config.NumAttentionHeads} heads ({config.NumKeyValueHeads} kv), vocab {config.VocabSize} ({Tokenizer(dir, config.VocabSize)}), positions {config.MaxPositionEmbeddings}");
        long perExpert = 3L * config.HiddenSize * config.IntermediateSize;
        long experts = perExpert * config.NumLocalExperts * config.NumHiddenLayers;
        long total = model.ParameterCount;
        long active = total - experts + perExpert * config.NumExpertsPerTok * config.NumHiddenLayers;
        log.WriteLine($"  parameters: {total:N0} ({experts:N0} in experts; ≈ {active:N0} active per token at k = {config.NumExpertsPerTok})");
        log.WriteLine($"  experts: {config.NumLocalExperts} per layer, num_experts_per_tok {config.NumExpertsPerTok}");
        log.WriteLine($"  router: {spec.Name}" + (spec.Options.Count == 0 ? " (defaults)" : "  " + string.Join("  ", spec.Options.Select(kv => $"{kv.Key}={kv.Value}"))));
        log.WriteLine($"  router (resolved): {Resolved(spec, config)}");

        string statePath = Path.Combine(dir, TrainCheckpoint.StateFile);
        if (File.Exists(statePath) && JsonNode.Parse(File.ReadAllText(statePath)) is JsonObject st)
        {
            var losses = st["train_losses"]?.AsArray();
            var valid = st["valid_losses"]?.AsArray();
            string last = losses is { Count: > 0 } ? $", last loss {losses[^1]!.GetValue<double>():F4}" : "";
            string v = valid is { Count: > 0 } ? $", valid {valid[^1]![1]!.GetValue<double>():F4} at step {valid[^1]![0]}" : "";
            log.WriteLine($"  training: step {st["step"]}, {st["tokens"]} tokens{last}{v}");
        }
        string statsPath = Path.Combine(dir, TrainCheckpoint.StatsFile);
        if (File.Exists(statsPath) && JsonNode.Parse(File.ReadAllText(statsPath)) is JsonArray layers)
        {
            log.WriteLine("  routing statistics of the last training step:");
            log.WriteLine("    layer  tokens  dropped  padded  IR  fill-ins  load CV  experts/token  extras          load");
            for (int i = 0; i < layers.Count; i++)
            {
                if (layers[i] is not JsonObject l) { log.WriteLine($"    {i,5}  (none)"); continue; }
                string extras = string.Join(" ", (l["extras"]?.AsObject() ?? []).Select(kv => $"{kv.Key}={kv.Value?.GetValue<double>():G3}"));
                string load = string.Join(",", l["expert_load"]!.AsArray().Select(x => x!.GetValue<int>()));
                log.WriteLine($"    {i,5}  {l["tokens"],6}  {l["pairs_dropped"],7}  {l["padded_slots"],6}  {l["rectified_tokens"],2}  {l["fill_ins"],8}  " +
                              $"{l["load_cv"]?.GetValue<double>() ?? double.NaN,7:F3}  {l["experts_per_token"]?.GetValue<double>() ?? double.NaN,13:F2}  {extras,-14}  [{load}]");
            }
        }
        else log.WriteLine("  routing statistics: none saved");
    }

    private static string Resolved(RouterSpec spec, MixtralConfig config) => spec.Name switch
    {
        "topk" => spec.TopK(config.NumExpertsPerTok).ToString(),
        "rectify" => spec.Rectify(config.NumExpertsPerTok).ToString(),
        "relu" => spec.Relu(config.NumExpertsPerTok).ToString(),
        _ => spec.C2R(config.NumExpertsPerTok, config.NumLocalExperts).ToString(),
    };

    // The model's tokenizer as generate would take it, or why there is none.
    private static string Tokenizer(string dir, int vocab)
    {
        try { return "tokenizer " + Data.TextTokenizer.ForModel(dir, vocab).Name; }
        catch (CliException) { return $"no tokenizer of puremoe's fits: generate needs token ids of its own ({Data.TextTokenizer.FileName} absent or another size)"; }
    }
}
