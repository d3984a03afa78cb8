using System.CommandLine;
using PureMoE.IO;
using PureMoE.Moe;
using PureMoE.Moe.Models;
using PureMoE.Moe.Parallel;
using PureMoE.Moe.Routing;

namespace PureMoE.Cli;

/// <summary>
/// `puremoe route --router NAME [router options] --logits FILE --out FILE [--devices P]`: routes router logits
/// (f32 [T, E]) and writes the plan — experts (int64 [T, m], −1 where empty), weights (f32 [T, m]), dropped
/// (int64 [T, m]), kind (0 empty, 1 primary, 2 fill-in, 3 rectified), slot, aux_loss and z_loss — so every router
/// can be inspected from outside the library. With --devices P the tokens are split into P contiguous ranks, each
/// routed on its own device (capacity per source device, IR to the best expert on that device).
/// </summary>
public static class RouteCommand
{
    /// <summary>The command with its options.</summary>
    public static Command Build()
    {
        var logits = new Option<string>("--logits") { Description = "safetensors file with logits (f32 [T, E])", Required = true };
        var output = new Option<string>("--out") { Description = "safetensors file to write the plan to", Required = true };
        var devices = new Option<int>("--devices") { Description = "expert-parallel ranks P (experts placed contiguously)", DefaultValueFactory = _ => 1 };
        var lists = new Option<string?>("--lists") { Description = "c2r: safetensors file with candidates (int64 [E, E-1]) or collaboration (int64 [E, E])" };
        var cmd = new Command("route", "Route router logits with any router and write the plan") { logits, output, devices, lists };
        var router = new RouterFlags(cmd);
        cmd.SetAction(r => CliErrors.Run(() => Run(router.Spec(r), r.GetValue(logits)!, r.GetValue(output)!, r.GetValue(devices), r.GetValue(lists), Console.Out)));
        return cmd;
    }

    /// <summary>Routes and writes the plan (the command's body; tests call it directly). Returns the per-rank plans.</summary>
    public static IReadOnlyList<RoutingPlan> Run(RouterSpec spec, string logitsPath, string outPath, int devices, string? listsPath, TextWriter log)
    {
        Tensor logits;
        using (var file = SafetensorsFile.Open(logitsPath))
        {
            if (!file.Contains("logits")) throw new CliException($"{logitsPath}: no tensor named logits (found: {string.Join(", ", file.Names)})");
            logits = file.Read("logits").ToTensor();
        }
        if (logits.Rank != 2 || !logits.DType.IsFloatingPoint())
            throw new CliException($"{logitsPath}: logits must be float [T, E], got {logits.DType.Name()} {logits.Shape}");
        int t = logits.Shape[0], e = logits.Shape[1];
        if (devices < 1 || t % devices != 0 || e % devices != 0)
            throw new CliException($"--devices {devices}: needs T = {t} tokens and E = {e} experts to divide evenly over the devices");

        IReadOnlyList<CollaborationProfile>? profiles = null;
        if (spec.Name == "c2r")
        {
            if (listsPath is null) throw new CliException("--router c2r needs --lists FILE (candidates [E, E-1] or collaboration [E, E])");
            profiles = [ReadProfile(listsPath, e)];
        }
        var routerOfLayer = spec.Build(1, e, 2, profiles)[0];
        var placement = ExpertPlacement.Contiguous(e, devices);
        int perRank = t / devices;
        var plans = new List<RoutingPlan>();
        for (int p = 0; p < devices; p++)
        {
            var context = new RoutingContext { Placement = placement, SourceDevice = p, Training = true };
            var plan = routerOfLayer.Route(logits.Narrow(0, p * perRank, perRank), context);
            plan.Validate();
            plans.Add(plan);
            var stats = RoutingStats.From(plan);
            log.WriteLine($"device {p}: {perRank} tokens, dropped pairs {stats.PairsDropped}, tokens without expert {stats.TokensDropped}, " +
                          $"IR tokens {stats.RectifiedTokens}, fill-ins {stats.FillInsUsed}, load [{string.Join(",", stats.ExpertLoad)}]");
        }
        TensorIO.Save(outPath, PlanTensors(plans));
        log.WriteLine($"route: {spec.Name} over {t} tokens x {e} experts on {devices} device(s); wrote {outPath}");
        return plans;
    }

    // Ranks may have different slot counts m only if the router varies it; ours do not, so rows concatenate.
    private static IEnumerable<KeyValuePair<string, Tensor>> PlanTensors(IReadOnlyList<RoutingPlan> plans)
    {
        int m = plans[0].SlotsPerToken, t = plans.Sum(p => p.Tokens);
        var experts = plans.SelectMany(p => p.Expert).Select(x => (long)x).ToArray();
        var dropped = plans.SelectMany(p => p.Dropped).Select(x => x ? 1L : 0L).ToArray();
        var kind = plans.SelectMany(p => p.Kind).Select(x => (long)x).ToArray();
        var slot = plans.SelectMany(p => p.Slot).Select(x => (long)x).ToArray();
        var weights = plans.SelectMany(p => p.Weights.ToFloatArray()).ToArray();
        double Sum(Func<RoutingPlan, Tensor?> f) => plans.Sum(p => f(p)?.Item() ?? 0);
        return
        [
            new("experts", Tensor.FromArray(experts, t, m)),
            new("weights", Tensor.FromArray(weights, t, m)),
            new("dropped", Tensor.FromArray(dropped, t, m)),
            new("kind", Tensor.FromArray(kind, t, m)),
            new("slot", Tensor.FromArray(slot, t, m)),
            new("aux_loss", Tensor.FromArray(new[] { (float)Sum(p => p.AuxLoss) }, 1)),
            new("z_loss", Tensor.FromArray(new[] { (float)Sum(p => p.ZLoss) }, 1)),
        ];
    }

    private static CollaborationProfile ReadProfile(string path, int experts)
    {
        var tensors = TensorIO.Load(path);
        if (tensors.TryGetValue("collaboration", out var c) && c.Shape == new Shape(experts, experts))
            return new CollaborationProfile(experts, c.ToLongArray());
        if (tensors.TryGetValue("candidates", out var l) && l.Shape == new Shape(experts, experts - 1))
            return MoeMixtral.ProfileFromCandidates(experts, l.ToLongArray());
        throw new CliException($"{path}: needs collaboration int64 [{experts},{experts}] or candidates int64 [{experts},{experts - 1}]");
    }
}
