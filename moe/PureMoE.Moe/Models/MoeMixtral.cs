using PureMoE.Autograd;
using PureMoE.Models;
using PureMoE.Moe.Parallel;
using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Models;

/// <summary>
/// Mixtral-architecture models whose MoE sub-layers are <see cref="MoeLayer"/>s with the router named in
/// config.json's "router" object (Mixtral's own softmax-top-k-renormalise when absent). Parameter names stay
/// Hugging Face's (block_sparse_moe.gate.weight, block_sparse_moe.experts.{e}.w1.weight, ...), so a Mixtral
/// checkpoint loads unchanged; router state (ReMoE's λ, C2R's collaboration lists) is saved beside the weights as
/// router_state.* tensors.
/// </summary>
public static class MoeMixtral
{
    private const string LambdaPrefix = MixtralCheckpoint.RouterStatePrefix + "relu.";
    private const string C2RPrefix = MixtralCheckpoint.RouterStatePrefix + "c2r.layers.";

    /// <summary>The router spec of a config (Mixtral's default when it has no "router").</summary>
    public static RouterSpec SpecOf(MixtralConfig config) =>
        config.RouterJson is null ? RouterSpec.MixtralDefault : RouterSpec.Parse(config.RouterJson);

    /// <summary>
    /// A new model with random weights. C2R needs <paramref name="profiles"/> (one per layer, e.g. from
    /// <see cref="Profile"/> on a trained model).
    /// </summary>
    /// <remarks>
    /// With <paramref name="devices"/> &gt; 1 every MoE layer runs expert-parallel on that many logical CPU devices
    /// (<see cref="ExpertParallelBlock"/>): experts placed contiguously, or for C2R co-located with their
    /// collaborators (each layer's profile clustered into groups of E/P, lists reordered group mates first).
    /// </remarks>
    public static MixtralForCausalLM Create(MixtralConfig config, Rng rng, DType dtype = DType.Float32, Device? device = null,
        IReadOnlyList<CollaborationProfile>? profiles = null, int devices = 1)
    {
        config.Validate();
        var spec = SpecOf(config);
        IReadOnlyList<ExpertPlacement>? placements = null;
        if (devices > 1 && spec.Name == "c2r" && profiles is not null)
        {
            var colocated = profiles.Select(p => p.CoLocate(devices)).ToArray();
            profiles = colocated.Select(c => c.Profile).ToArray();
            placements = colocated.Select(c => c.Placement).ToArray();
        }
        var routers = spec.Build(config.NumHiddenLayers, config.NumLocalExperts, config.NumExpertsPerTok, profiles);
        return new MixtralForCausalLM(config, rng, dtype, device, Factory(routers, devices, placements));
    }

    /// <summary>
    /// The factory that gives decoder layer i a MoeLayer with router i — wrapped to run expert-parallel on
    /// <paramref name="devices"/> devices when more than one (placement i, contiguous when not given): logical CPU
    /// devices for a model on the CPU, the GPUs from the model's on for a model on a GPU
    /// (<see cref="DeviceGroup.Starting"/>).
    /// </summary>
    public static MoeBlockFactory Factory(IReadOnlyList<IRouter> routers, int devices = 1, IReadOnlyList<ExpertPlacement>? placements = null) =>
        (config, layer, rng, dtype, device) =>
        {
            var moe = new MoeLayer(config.HiddenSize, config.IntermediateSize, routers[layer], rng, config.InitializerRange, dtype, device);
            if (devices <= 1) return moe;
            return new ExpertParallelBlock(moe, DeviceGroup.Starting(device ?? Device.Cpu, devices), placements?[layer]);
        };

    /// <summary>The MoE layers of a model built by this class (the wrapped layer of an expert-parallel block).</summary>
    public static IReadOnlyList<MoeLayer> Layers(MixtralForCausalLM model) =>
        model.Model.Layers.Select((l, i) => l.BlockSparseMoe switch
        {
            MoeLayer m => m,
            ExpertParallelBlock b => b.Inner,
            _ => throw new InvalidOperationException($"layer {i} has a {l.BlockSparseMoe.GetType().Name}, not a MoeLayer"),
        }).ToArray();

    /// <summary>The routing statistics of each layer's last forward (merged over ranks when expert-parallel).</summary>
    public static IReadOnlyList<RoutingStats?> LastStats(MixtralForCausalLM model) =>
        model.Model.Layers.Select(l => l.BlockSparseMoe switch
        {
            MoeLayer m => m.LastStats,
            ExpertParallelBlock b => b.LastStats,
            _ => null,
        }).ToArray();

    /// <summary>Each layer's plans of the last forward: one, or one per rank when expert-parallel.</summary>
    public static IReadOnlyList<IReadOnlyList<RoutingPlan>> LastPlans(MixtralForCausalLM model) =>
        model.Model.Layers.Select(l => l.BlockSparseMoe switch
        {
            MoeLayer { LastPlan: RoutingPlan plan } => [plan],
            ExpertParallelBlock { LastPlans: { } plans } => plans,
            _ => (IReadOnlyList<RoutingPlan>)[],
        }).ToArray();

    /// <summary>Bytes the last step's dispatch sent between devices, summed over layers (0 on one device).</summary>
    public static long LastDispatchBytes(MixtralForCausalLM model) =>
        model.Model.Layers.Sum(l => l.BlockSparseMoe is ExpertParallelBlock b ? b.LastExchange?.DispatchBytes ?? 0 : 0);

    /// <summary>
    /// Tells adaptive routers (ReMoE's λ) that an optimizer step happened, with the plans of that step's training
    /// forward. Call once after each optimizer step.
    /// </summary>
    public static void AfterOptimizerStep(MixtralForCausalLM model) => AfterOptimizerStep(model, LastPlans(model));

    /// <summary>
    /// <see cref="AfterOptimizerStep(MixtralForCausalLM)"/> with the plans of every training forward of the step, per
    /// layer: with gradient accumulation, those of all its micro-batches (ReMoE's λ then moves on the sparsity of the
    /// whole step's tokens).
    /// </summary>
    public static void AfterOptimizerStep(MixtralForCausalLM model, IReadOnlyList<IReadOnlyList<RoutingPlan>> plansPerLayer)
    {
        ArgumentNullException.ThrowIfNull(plansPerLayer);
        var layers = Layers(model);
        if (plansPerLayer.Count != layers.Count)
            throw new ArgumentException($"AfterOptimizerStep: plans for {plansPerLayer.Count} layers, the model has {layers.Count} MoE layers", nameof(plansPerLayer));
        for (int i = 0; i < layers.Count; i++)
            if (layers[i].Router is IAdaptiveRouter adaptive && plansPerLayer[i].Count > 0) adaptive.AfterOptimizerStep(plansPerLayer[i]);
    }

    /// <summary>
    /// Runs the model over <paramref name="batches"/> (no gradients) and counts, per layer, which experts each token
    /// used together: the collaboration profiles C2R routes with.
    /// </summary>
    public static IReadOnlyList<CollaborationProfile> Profile(MixtralForCausalLM model, IEnumerable<Tensor> batches)
    {
        var profiler = new CollaborationProfiler(model.Model.Layers.Count, model.Config.NumLocalExperts);
        using (GradMode.NoGrad())
            foreach (var batch in batches)
            {
                model.Forward(batch);
                var plans = LastPlans(model);
                for (int i = 0; i < plans.Count; i++)
                    foreach (var plan in plans[i]) profiler.Record(i, plan);
            }
        return profiler.Profiles();
    }

    /// <summary>The router state to save beside the weights (λ of ReMoE routers, C2R lists).</summary>
    public static Dictionary<string, Tensor> RouterState(MixtralForCausalLM model)
    {
        var state = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var layers = Layers(model);
        for (int i = 0; i < layers.Count; i++)
        {
            switch (layers[i].Router)
            {
                case ReluRouter relu:
                    foreach (var (k, v) in relu.Lambda.StateDict($"{LambdaPrefix}layers.{i}.")) state[k] = v;
                    break;
                case C2RRouter c2r:
                    var lists = Enumerable.Range(0, c2r.Experts).SelectMany(c2r.CandidateList).Select(e => (long)e).ToArray();
                    state[$"{C2RPrefix}{i}.candidates"] = Tensor.FromArray(lists, c2r.Experts, c2r.Experts - 1);
                    break;
            }
        }
        return state;
    }

    /// <summary>Saves the model as a Mixtral-format directory (config.json with its router, weights, router state).</summary>
    public static void Save(MixtralForCausalLM model, string dir) => MixtralCheckpoint.Save(model, dir, RouterState(model));

    /// <summary>Loads a directory saved by <see cref="Save"/> or any Hugging Face Mixtral checkpoint.</summary>
    public static MixtralForCausalLM Load(string dir, DType dtype = DType.Float32, Device? device = null, int devices = 1)
    {
        var config = MixtralConfig.Load(Path.Combine(dir, "config.json"));
        var spec = SpecOf(config);
        var state = MixtralCheckpoint.LoadWeights(dir, name => name.StartsWith(MixtralCheckpoint.RouterStatePrefix, StringComparison.Ordinal));
        IReadOnlyList<CollaborationProfile>? profiles = null;
        if (spec.Name == "c2r") profiles = ReadC2RLists(state, config, dir);
        IReadOnlyList<ExpertPlacement>? placements = null;
        if (devices > 1 && profiles is not null)
        {
            var colocated = profiles.Select(p => p.CoLocate(devices)).ToArray();
            profiles = colocated.Select(c => c.Profile).ToArray();
            placements = colocated.Select(c => c.Placement).ToArray();
        }
        var routers = spec.Build(config.NumHiddenLayers, config.NumLocalExperts, config.NumExpertsPerTok, profiles);
        var model = MixtralCheckpoint.Load(dir, dtype, device, Factory(routers, devices, placements));
        for (int i = 0; i < routers.Count; i++)
            if (routers[i] is ReluRouter relu && state.Keys.Any(k => k.StartsWith($"{LambdaPrefix}layers.{i}.", StringComparison.Ordinal)))
                relu.Lambda.LoadStateDict(state, $"{LambdaPrefix}layers.{i}.");
        return model;
    }

    /// <summary>
    /// A profile from saved candidate lists (int64 [E, E−1], row i = List(i)). Routing needs only the lists; the
    /// matrix is rebuilt as rank scores (E−1 for the first candidate down to 1) so the profile is self-consistent.
    /// </summary>
    public static CollaborationProfile ProfileFromCandidates(int experts, long[] candidates)
    {
        if (candidates.Length != experts * (experts - 1))
            throw new ArgumentException($"ProfileFromCandidates: {candidates.Length} entries, expected [{experts},{experts - 1}]");
        var lists = Enumerable.Range(0, experts)
            .Select(x => candidates.Skip(x * (experts - 1)).Take(experts - 1).Select(v => (int)v).ToArray()).ToArray();
        var matrix = new long[experts * experts];
        for (int x = 0; x < experts; x++)
        {
            matrix[x * experts + x] = -1;
            for (int r = 0; r < experts - 1; r++) matrix[x * experts + lists[x][r]] = experts - 1 - r;
        }
        return new CollaborationProfile(experts, matrix, lists);
    }

    private static IReadOnlyList<CollaborationProfile> ReadC2RLists(Dictionary<string, Tensor> state, MixtralConfig config, string dir)
    {
        int e = config.NumLocalExperts;
        var profiles = new List<CollaborationProfile>();
        for (int i = 0; i < config.NumHiddenLayers; i++)
        {
            if (!state.TryGetValue($"{C2RPrefix}{i}.candidates", out var t) || t.Shape != new Shape(e, e - 1))
                throw new InvalidDataException($"{dir}: router c2r needs {C2RPrefix}{i}.candidates [{e},{e - 1}] in the weights");
            profiles.Add(ProfileFromCandidates(e, t.ToArray<long>()));
        }
        return profiles;
    }
}
