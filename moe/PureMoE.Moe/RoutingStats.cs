using PureMoE.Moe.Routing;

namespace PureMoE.Moe;

/// <summary>
/// What one layer's routing did in one step: drops, padding, rectifications, load and its balance, experts per
/// token, co-activation, and the regulariser values.
/// </summary>
public sealed record RoutingStats
{
    /// <summary>Tokens routed.</summary>
    public int Tokens { get; init; }
    /// <summary>Experts.</summary>
    public int Experts { get; init; }
    /// <summary>
    /// First choices: the pairs in the plan's <see cref="RoutingPlan.FirstChoiceColumns"/> (the top-k), before
    /// capacity. Rectify's fill-in candidates are counted apart (<see cref="FillInCandidates"/>).
    /// </summary>
    public int PairsChosen { get; init; }
    /// <summary>
    /// First choices dropped for capacity and left dropped. A fill-in candidate that found no spare capacity is not
    /// one, nor is a dropped choice that Intra-GPU rectification took over in place (that token is in
    /// <see cref="RectifiedTokens"/>).
    /// </summary>
    public int PairsDropped { get; init; }
    /// <summary>Tokens left with no expert at all (their output is 0; the residual carries them).</summary>
    public int TokensDropped { get; init; }
    /// <summary>Rows computed on zero padding (capacity · E minus the kept rows inside capacity), when capacity applies.</summary>
    public int PaddedSlots { get; init; }
    /// <summary>
    /// Rectify: fill-in candidates, the (k+1)-th choice each token offers to spare capacity (less those whose place
    /// Intra-GPU rectification took for its rectified pair).
    /// </summary>
    public int FillInCandidates { get; init; }
    /// <summary>Rectify: fill-in pairs kept (candidates that found spare capacity).</summary>
    public int FillInsUsed { get; init; }
    /// <summary>Rectify: tokens given an Intra-GPU rectified pair.</summary>
    public int RectifiedTokens { get; init; }
    /// <summary>Kept pairs per expert.</summary>
    public int[] ExpertLoad { get; init; } = [];
    /// <summary>Coefficient of variation (std/mean) of <see cref="ExpertLoad"/>: 0 is perfectly balanced.</summary>
    public double LoadCv { get; init; }
    /// <summary>Mean number of kept experts per token.</summary>
    public double ActiveExpertsPerToken { get; init; }
    /// <summary>Co-activation counts [E·E]: entry i·E + j counts tokens that kept both i and j (diagonal: load).</summary>
    public long[] CoActivation { get; init; } = [];
    /// <summary>Aux loss value (scaled), NaN when not computed (and, from <see cref="From"/>, on ILGPU devices: see there).</summary>
    public double AuxLoss { get; init; } = double.NaN;
    /// <summary>z-loss value (scaled), NaN when not computed.</summary>
    public double ZLoss { get; init; } = double.NaN;
    /// <summary>Sparsity (L1) regulariser value (scaled), NaN when not computed.</summary>
    public double SparsityLoss { get; init; } = double.NaN;
    /// <summary>
    /// Router-specific numbers: counts under the router's name and a dot (Rectify's "rectify.ir_merged", …), and
    /// fractions or state without one (ReMoE's "sparsity" and "lambda"). <see cref="Merge"/> sums the counts and
    /// averages the others over the parts' tokens.
    /// </summary>
    public IReadOnlyDictionary<string, double> Extras { get; init; } = new Dictionary<string, double>();

    /// <summary>
    /// Computes the statistics of a plan from its host arrays. The regulariser values (<see cref="AuxLoss"/>,
    /// <see cref="ZLoss"/>, <see cref="SparsityLoss"/>) are read only from host tensors: on an ILGPU device they are
    /// NaN (reading each would be a device→host synchronisation); set them with <c>with</c> from values read once.
    /// </summary>
    public static RoutingStats From(RoutingPlan plan)
    {
        int t = plan.Tokens, m = plan.SlotsPerToken, e = plan.Experts;
        var load = new int[e];
        var co = new long[e * e];
        int chosen = 0, dropped = 0, candidates = 0, fillIns = 0, rectified = 0, kept = 0, keptInCapacity = 0;
        var keptOfToken = new List<int>(m);
        for (int tok = 0; tok < t; tok++)
        {
            keptOfToken.Clear();
            bool rect = false;
            for (int j = 0; j < m; j++)
            {
                int i = tok * m + j;
                if (plan.Expert[i] < 0) continue;
                if (j < plan.FirstChoiceColumns) chosen++;
                if (plan.Kind[i] == PairKind.FillIn) candidates++;
                if (plan.Dropped[i])
                {
                    if (j < plan.FirstChoiceColumns) dropped++;
                    continue;
                }
                keptOfToken.Add(plan.Expert[i]);
                if (plan.Kind[i] == PairKind.FillIn) fillIns++;
                if (plan.Kind[i] == PairKind.Rectified) rect = true;
                else keptInCapacity++;
            }
            if (rect) rectified++;
            kept += keptOfToken.Count;
            foreach (int a in keptOfToken)
            {
                load[a]++;
                foreach (int b in keptOfToken) co[a * e + b]++;
            }
        }
        double mean = load.Average(), var = load.Select(l => (l - mean) * (l - mean)).Average();
        return new RoutingStats
        {
            Tokens = t,
            Experts = e,
            PairsChosen = chosen,
            PairsDropped = dropped,
            TokensDropped = plan.TokensWithoutExpert(),
            PaddedSlots = plan.Capacity is int c ? Math.Max(0, c * e - keptInCapacity) : 0,
            FillInCandidates = candidates,
            FillInsUsed = fillIns,
            RectifiedTokens = rectified,
            ExpertLoad = load,
            LoadCv = mean > 0 ? Math.Sqrt(var) / mean : 0,
            ActiveExpertsPerToken = t > 0 ? (double)kept / t : 0,
            CoActivation = co,
            AuxLoss = HostValue(plan.AuxLoss),
            ZLoss = HostValue(plan.ZLoss),
            SparsityLoss = HostValue(plan.SparsityLoss),
            Extras = plan.Extras,
        };
    }

    // A regulariser's value when it lives on the host. On an ILGPU device reading it would be one more
    // device→host read (a synchronisation) per value and layer: it stays NaN here, and a trainer that wants it
    // reads it together with the step's loss (`puremoe train` does) and sets it with `stats with { AuxLoss = … }`.
    private static double HostValue(Tensor? t) => t is null || !t.Device.IsHost ? double.NaN : t.Item();

    /// <summary>
    /// Statistics of several plans taken together (the ranks of one expert-parallel step, the micro-batches of one
    /// accumulated step): counts and loads summed, regulariser values summed, <see cref="Extras"/> as documented there.
    /// </summary>
    public static RoutingStats Merge(IReadOnlyList<RoutingStats> parts)
    {
        if (parts.Count == 1) return parts[0];
        int e = parts[0].Experts, tokens = parts.Sum(p => p.Tokens);
        var load = new int[e];
        var co = new long[e * e];
        foreach (var p in parts)
        {
            for (int i = 0; i < e; i++) load[i] += p.ExpertLoad[i];
            for (int i = 0; i < co.Length; i++) co[i] += p.CoActivation[i];
        }
        double mean = load.Average(), var = load.Select(l => (l - mean) * (l - mean)).Average();
        static double SumOrNaN(IEnumerable<double> xs) => xs.All(double.IsNaN) ? double.NaN : xs.Where(x => !double.IsNaN(x)).Sum();
        return new RoutingStats
        {
            Tokens = tokens,
            Experts = e,
            PairsChosen = parts.Sum(p => p.PairsChosen),
            PairsDropped = parts.Sum(p => p.PairsDropped),
            TokensDropped = parts.Sum(p => p.TokensDropped),
            PaddedSlots = parts.Sum(p => p.PaddedSlots),
            FillInCandidates = parts.Sum(p => p.FillInCandidates),
            FillInsUsed = parts.Sum(p => p.FillInsUsed),
            RectifiedTokens = parts.Sum(p => p.RectifiedTokens),
            ExpertLoad = load,
            LoadCv = mean > 0 ? Math.Sqrt(var) / mean : 0,
            ActiveExpertsPerToken = tokens > 0 ? parts.Sum(p => p.ActiveExpertsPerToken * p.Tokens) / tokens : 0,
            CoActivation = co,
            AuxLoss = SumOrNaN(parts.Select(p => p.AuxLoss)),
            ZLoss = SumOrNaN(parts.Select(p => p.ZLoss)),
            SparsityLoss = SumOrNaN(parts.Select(p => p.SparsityLoss)),
            Extras = MergeExtras(parts),
        };
    }

    // Counts ("rectify.ir_merged") add up over the parts; fractions and state ("sparsity", "lambda") are means over
    // the parts' tokens, so a merged sparsity is that of all the tokens, as one plan of them all would give.
    private static Dictionary<string, double> MergeExtras(IReadOnlyList<RoutingStats> parts)
    {
        var merged = new Dictionary<string, double>();
        foreach (string key in parts.SelectMany(p => p.Extras.Keys).Distinct())
        {
            var having = parts.Where(p => p.Extras.ContainsKey(key)).ToArray();
            int weight = having.Sum(p => p.Tokens);
            merged[key] = key.Contains('.', StringComparison.Ordinal) ? having.Sum(p => p.Extras[key])
                : weight > 0 ? having.Sum(p => p.Extras[key] * p.Tokens) / weight
                : having.Average(p => p.Extras[key]);
        }
        return merged;
    }
}
