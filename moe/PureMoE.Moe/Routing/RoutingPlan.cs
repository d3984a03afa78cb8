using System.Diagnostics;

namespace PureMoE.Moe.Routing;

/// <summary>Why a (token, expert) pair is in a plan.</summary>
public enum PairKind : byte
{
    /// <summary>An empty slot (no expert).</summary>
    None = 0,
    /// <summary>One of the token's first-k choices.</summary>
    Primary,
    /// <summary>Rectify's fill-in: the (k+1)-th choice placed in a slot left free by first choices.</summary>
    FillIn,
    /// <summary>Rectify's Intra-GPU rectification: the best expert on the token's own device, outside capacity.</summary>
    Rectified,
}

/// <summary>
/// The seam between routers and everything else. For each of T tokens, m slots; slot (t, j) holds an expert (or
/// −1), a gate weight, and — where capacity applies — the position the pair takes in its expert's buffer, or the
/// fact that it was dropped. Dispatch, experts, exchange and combine read only this.
/// Arrays are row-major [T, m] flattened: entry t·m + j.
/// </summary>
public sealed class RoutingPlan
{
    /// <summary>Creates a plan; arrays are taken as given (not copied). Missing arrays mean "none dropped",
    /// "no slots", "every non-empty pair is Primary".</summary>
    public RoutingPlan(int tokens, int experts, int slotsPerToken, int[] expert, Tensor weights,
        bool[]? dropped = null, int[]? slot = null, PairKind[]? kind = null, int? capacity = null, bool padToCapacity = false)
    {
        int n = tokens * slotsPerToken;
        if (expert.Length != n) throw new ArgumentException($"RoutingPlan: expert array has {expert.Length} entries, expected {tokens}x{slotsPerToken}");
        if (weights.Shape != new Shape(tokens, slotsPerToken))
            throw new ArgumentException($"RoutingPlan: weights {weights.Shape} must be [{tokens},{slotsPerToken}]");
        Tokens = tokens;
        Experts = experts;
        SlotsPerToken = slotsPerToken;
        Expert = expert;
        Weights = weights;
        Dropped = dropped ?? new bool[n];
        Slot = slot ?? Enumerable.Repeat(-1, n).ToArray();
        Kind = kind ?? expert.Select(e => e >= 0 ? PairKind.Primary : PairKind.None).ToArray();
        Capacity = capacity;
        PadToCapacity = padToCapacity;
        if (Dropped.Length != n || Slot.Length != n || Kind.Length != n)
            throw new ArgumentException("RoutingPlan: dropped/slot/kind arrays must have T·m entries");
        if (padToCapacity && capacity is null) throw new ArgumentException("RoutingPlan: padding to capacity needs a capacity");
    }

    /// <summary>Number of tokens T.</summary>
    public int Tokens { get; }

    /// <summary>Number of experts E.</summary>
    public int Experts { get; }

    /// <summary>Slots per token m (k for TopK, k+1 with fill-in or rectification, E for ReLU routing).</summary>
    public int SlotsPerToken { get; }

    /// <summary>Expert of each slot, −1 where empty. [T·m]</summary>
    public int[] Expert { get; }

    /// <summary>Gate weight of each slot [T, m] (differentiable; 0 for empty and dropped slots).</summary>
    public Tensor Weights { get; }

    /// <summary>True where a chosen pair was dropped for capacity. [T·m]</summary>
    public bool[] Dropped { get; }

    /// <summary>Position of a kept pair in its expert's capacity buffer, −1 when none (dropless or rectified). [T·m]</summary>
    public int[] Slot { get; }

    /// <summary>Why each pair is there. [T·m]</summary>
    public PairKind[] Kind { get; }

    /// <summary>
    /// Columns 0 … this − 1 of each token hold the router's first choices (its top-k); the columns after them, a
    /// router's additions (Rectify's fill-in and Intra-GPU columns). Default: every column. Statistics count drops
    /// over these columns only, so a fill-in candidate that finds no spare capacity is not a dropped choice.
    /// </summary>
    public int FirstChoiceColumns
    {
        get => _firstChoiceColumns ?? SlotsPerToken;
        init => _firstChoiceColumns = value >= 0 && value <= SlotsPerToken ? value
            : throw new ArgumentOutOfRangeException(nameof(FirstChoiceColumns), $"RoutingPlan: {value} first-choice columns with {SlotsPerToken} slots per token");
    }
    private readonly int? _firstChoiceColumns;

    /// <summary>Rows each expert may take (null: dropless).</summary>
    public int? Capacity { get; }

    /// <summary>Every expert computes exactly <see cref="Capacity"/> rows; the missing rows are zeros (GShard).</summary>
    public bool PadToCapacity { get; }

    /// <summary>Load-balancing auxiliary loss (already scaled by its coefficient), if the router computed one.</summary>
    public Tensor? AuxLoss { get; init; }

    /// <summary>Router z-loss (scaled), if computed.</summary>
    public Tensor? ZLoss { get; init; }

    /// <summary>ReMoE's sparsity regulariser (scaled by λ), if computed.</summary>
    public Tensor? SparsityLoss { get; init; }

    /// <summary>Extra per-router numbers for the stats (e.g. ReMoE's λ).</summary>
    public IReadOnlyDictionary<string, double> Extras { get; init; } = new Dictionary<string, double>();

    /// <summary>The sum of the router's regularisers (null when there are none): add it to the training loss.</summary>
    public Tensor? RegularizationLoss
    {
        get
        {
            Tensor? total = null;
            foreach (var l in new[] { AuxLoss, ZLoss, SparsityLoss })
                if (l is not null) total = total is null ? l : total.Add(l);
            return total;
        }
    }

    /// <summary>True when slot i (= t·m + j) holds a pair that is computed.</summary>
    public bool IsKept(int i) => Expert[i] >= 0 && !Dropped[i];

    /// <summary>Kept pairs per expert (including rectified ones).</summary>
    public int[] KeptPerExpert()
    {
        var counts = new int[Experts];
        for (int i = 0; i < Expert.Length; i++) if (IsKept(i)) counts[Expert[i]]++;
        return counts;
    }

    /// <summary>Tokens left with no kept pair.</summary>
    public int TokensWithoutExpert()
    {
        int n = 0;
        for (int t = 0; t < Tokens; t++)
        {
            bool any = false;
            for (int j = 0; j < SlotsPerToken; j++) any |= IsKept(t * SlotsPerToken + j);
            if (!any) n++;
        }
        return n;
    }

    /// <summary>
    /// Checks the plan's invariants and throws <see cref="InvalidOperationException"/> naming the first broken
    /// one: experts in range; no (token, expert) pair twice; weights finite, ≥ 0, and 0 on empty or dropped slots;
    /// dropped only where an expert was chosen; with capacity, every kept non-rectified pair has a slot in
    /// [0, C) that no other pair of that expert uses.
    /// </summary>
    public void Validate()
    {
        int m = SlotsPerToken;
        double[] w = Weights.ToDoubleArray();
        var seen = new HashSet<int>();
        var slotsUsed = new HashSet<(int, int)>();
        for (int t = 0; t < Tokens; t++)
        {
            seen.Clear();
            for (int j = 0; j < m; j++)
            {
                int i = t * m + j, e = Expert[i];
                string at = $"token {t} slot {j}";
                if (e < -1 || e >= Experts) throw Broken($"{at}: expert {e} is outside [0, {Experts})");
                if (!double.IsFinite(w[i]) || w[i] < 0) throw Broken($"{at}: weight {w[i]} is not finite and ≥ 0");
                if (e < 0)
                {
                    if (w[i] != 0 || Dropped[i] || Kind[i] != PairKind.None) throw Broken($"{at}: an empty slot must have weight 0, not be dropped, kind None");
                    continue;
                }
                if (!seen.Add(e)) throw Broken($"{at}: expert {e} appears twice for this token");
                if (Kind[i] == PairKind.None) throw Broken($"{at}: a pair with expert {e} has kind None");
                if (Dropped[i] && w[i] != 0) throw Broken($"{at}: dropped pair has weight {w[i]}");
                if (Capacity is int c && !Dropped[i] && Kind[i] != PairKind.Rectified)
                {
                    if (Slot[i] < 0 || Slot[i] >= c) throw Broken($"{at}: kept pair of expert {e} has slot {Slot[i]} outside [0, {c})");
                    if (!slotsUsed.Add((e, Slot[i]))) throw Broken($"{at}: slot {Slot[i]} of expert {e} is used twice");
                }
            }
        }
    }

    /// <summary>Validates in Debug builds only (the layer calls this on every forward).</summary>
    [Conditional("DEBUG")]
    public void DebugValidate() => Validate();

    private static InvalidOperationException Broken(string what) => new($"RoutingPlan invariant broken: {what}");
}
