// Rectify-Router (Zeng et al., arXiv 2402.12399), ROUTERS.md §2: TopK with capacity plus two rectifications.
//
// Logits l ∈ R^{T×E} of the T tokens of one source device, g = softmax(l) over all E experts, k first choices.
//
//   Choices      K = k, or k + 1 with Fill-in Rectification (FR). Each token's K choices are the top-K of g
//                (ties: lower expert index first); choice j < k is a first choice, choice k the fill-in.
//   Capacity     C = ceil(T·k/E · CF), the budget of top-k at CF. FR is "top-(k+1) at CF·k/(k+1)", whose capacity
//                ceil(T·(k+1)/E · CF·k/(k+1)) is the same number; it is computed in the top-k form so rounding
//                cannot make the two differ.
//   First choices  each expert keeps its C first-choice pairs with the highest g (ties: lower token first);
//                slots 0, 1, … in token order among the kept ones.
//   FR           fill-ins only take the slots left after ALL first choices are placed: expert e's fill-ins start
//                at slot f_e = number of first-choice pairs of e before dropping, so C − f_e are free (none if
//                f_e ≥ C). Among fill-ins for e, priority (option FillPriority): Score = the fill-in's own g
//                (the paper), Top1Gate = the token's top-1 g, Position = token order. The fill-in is the best
//                expert outside the token's first k, so a token never fills an expert it already uses.
//   IR           Intra-GPU rectification for unrouted tokens (option Unrouted, n = the token's kept pairs):
//                All: n = 0; Any: n < K; IgnoreKth: n < K − 1. Target h = argmax of g over the experts on the
//                token's own device (the expert that dropped it is not excluded); it bypasses capacity (kind
//                Rectified, no slot) and adds no communication.
//   Output       with R the kept pairs and m = K − |R| missing pairs (m = 0 for a token IR leaves alone):
//                  o = ( Σ_{j∈R} g_j·E_j(x) + m·g_h·E_h(x) ) / sg( Σ_{j∈R} g_j + m·g_h )
//                As plan weights: w_j = μ_j·g_j / sg(Σ_i μ_i·g_i) with multiplicity μ = 1 for kept pairs,
//                μ = m for h, 0 for dropped pairs. Without IR this is FR's w = g / sg(Σ kept g).
//                No (token, expert) may appear twice in a plan, so when h is already one of the token's pairs:
//                  · h kept:   merge, μ_h = 1 + m on that pair (same sum as above);
//                  · h dropped: that pair becomes the rectified pair in place (not dropped, no slot, μ = m).
//                Otherwise h takes the extra IR column. For k = 1 and a dropped token the weight is
//                m·g_h / (m·g_h) = 1 exactly, so the output is exactly E_h(x).
//   Aux loss     a · E/(k·T²) · Σ_e (Σ_t g_te) · count_e over the FIRST k choices (before dropping), normalised by
//                k: the authors' implementation balances first choices only, and this keeps the FR-at-CF·k/(k+1)
//                reduction to top-k at CF exact. z-loss z · mean_t (logsumexp_e l_te)². Training only.
//
// Plan layout per token: columns 0 … k−1 first choices, column k the fill-in (with FR), then one IR column (with
// IR; empty unless a rectified pair needs it).

namespace PureMoE.Moe.Routing;

/// <summary>Which tokens Intra-GPU rectification treats as unrouted (n = kept pairs, K = choices).</summary>
public enum UnroutedPolicy
{
    /// <summary>Tokens with no kept pair (n = 0).</summary>
    All,
    /// <summary>Tokens that lost any choice (n &lt; K).</summary>
    Any,
    /// <summary>Tokens that lost more than the fill-in choice (n &lt; K − 1).</summary>
    IgnoreKth,
}

/// <summary>Which fill-in candidates an expert takes first.</summary>
public enum FillPriority
{
    /// <summary>The fill-in's own probability, highest first (the paper).</summary>
    Score,
    /// <summary>The token's top-1 probability, highest first.</summary>
    Top1Gate,
    /// <summary>Token order.</summary>
    Position,
}

/// <summary>Options of <see cref="RectifyRouter"/> (ROUTERS.md §2).</summary>
public sealed record RectifyOptions
{
    /// <summary>First choices per token k (1 ≤ k ≤ E; k + 1 ≤ E with fill-in).</summary>
    public int K { get; init; } = 1;

    /// <summary>
    /// Capacity factor CF of the top-k budget: C = ceil(T·k/E·CF), as for <see cref="TopKRouter"/> at CF. With
    /// fill-in this is the paper's top-(k+1) routing at factor CF·k/(k+1) (top-1 + FR at CF = 1 is top-2 at 0.5).
    /// </summary>
    public double CapacityFactor { get; init; } = 1.0;

    /// <summary>Intra-GPU rectification on/off.</summary>
    public bool IntraGpu { get; init; } = true;

    /// <summary>Which tokens IR rectifies.</summary>
    public UnroutedPolicy Unrouted { get; init; } = UnroutedPolicy.All;

    /// <summary>Fill-in rectification on/off (a (k+1)-th choice placed in slots left free).</summary>
    public bool FillIn { get; init; } = true;

    /// <summary>Priority among fill-in candidates of one expert.</summary>
    public FillPriority FillPriority { get; init; } = FillPriority.Score;

    /// <summary>Coefficient a of the load-balancing loss over first choices (0 = off; the paper uses 0.01).</summary>
    public double AuxLossCoeff { get; init; }

    /// <summary>Coefficient z of the router z-loss (0 = off).</summary>
    public double ZLossCoeff { get; init; }

    /// <summary>
    /// Test switch: with fill-in on, choose the (k+1)-th expert and reserve its column but never place it. Used by
    /// the reduction property (top-(k+1) at CF·k/(k+1) without fill-ins equals top-k at CF).
    /// </summary>
    internal bool PlaceFillIns { get; init; } = true;

    /// <summary>
    /// Test switch: use these per-token denominators instead of sg(Σ μ·g). Frozen at a point θ₀, the weights
    /// μ·g(θ)/D(θ₀) have as true derivative the stop-gradient one, which finite differences can then check.
    /// </summary>
    internal double[]? FrozenDenominators { get; init; }

    /// <summary>The paper's final configuration: top-1 + FR + IR (IgnoreKth), aux 0.01, no z-loss.</summary>
    public static RectifyOptions PaperFinal => new()
    {
        K = 1, FillIn = true, IntraGpu = true, Unrouted = UnroutedPolicy.IgnoreKth, AuxLossCoeff = 0.01,
    };

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first invalid option for E experts.</summary>
    public void Validate(int experts)
    {
        if (experts < 1) throw new ArgumentException($"RectifyRouter: experts = {experts} must be ≥ 1");
        if (K < 1 || K > experts) throw new ArgumentException($"RectifyOptions.K = {K} must be in [1, {experts}] (the number of experts)");
        if (FillIn && K + 1 > experts)
            throw new ArgumentException($"RectifyOptions.FillIn needs a (K+1)-th expert: K = {K} with {experts} experts leaves none");
        if (!double.IsFinite(CapacityFactor) || CapacityFactor <= 0)
            throw new ArgumentException($"RectifyOptions.CapacityFactor = {CapacityFactor} must be a finite number > 0");
        if (!(AuxLossCoeff >= 0) || !double.IsFinite(AuxLossCoeff))
            throw new ArgumentException($"RectifyOptions.AuxLossCoeff = {AuxLossCoeff} must be a finite number ≥ 0");
        if (!(ZLossCoeff >= 0) || !double.IsFinite(ZLossCoeff))
            throw new ArgumentException($"RectifyOptions.ZLossCoeff = {ZLossCoeff} must be a finite number ≥ 0");
    }
}

/// <summary>
/// Rectify-Router: TopK at capacity with Intra-GPU rectification (dropped tokens go to the best expert on their
/// own device) and Fill-in rectification (a (k+1)-th choice fills slots left free). The math is at the top of
/// this file.
/// </summary>
public sealed class RectifyRouter : IRouter
{
    /// <summary>A Rectify router over <paramref name="experts"/> experts; invalid options throw ArgumentException.</summary>
    public RectifyRouter(int experts, RectifyOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(experts);
        Experts = experts;
        Options = options;
    }

    /// <inheritdoc />
    public string Name => "rectify";

    /// <inheritdoc />
    public int Experts { get; }

    /// <summary>The options.</summary>
    public RectifyOptions Options { get; }

    /// <summary>Choices per token K: k, or k + 1 with fill-in.</summary>
    public int Choices => Options.K + (Options.FillIn ? 1 : 0);

    /// <summary>Plan columns per token: the choices, plus one for Intra-GPU rectification.</summary>
    public int Columns => Choices + (Options.IntraGpu ? 1 : 0);

    /// <summary>The per-token denominators sg(Σ μ·g) of the last Route (tests freeze them, see the options).</summary>
    /// <remarks>Read on demand (a device→host read on a GPU), so routing itself reads nothing more.</remarks>
    internal double[] LastDenominators => _lastDenominator?.ToDoubleArray() ?? [];

    private Tensor? _lastDenominator;

    /// <inheritdoc />
    public RoutingPlan Route(Tensor logits, RoutingContext context)
    {
        RouterChecks.CheckInputs("RectifyRouter", logits, context, Experts);
        int tokens = logits.Shape[0], k = Options.K, choices = Choices, columns = Columns;
        int Pair(int token, int column) => token * columns + column;

        // The top-K experts of every token by probability g, and their g.
        var probabilities = logits.Softmax(-1);                                        // g, [T, E]
        var (topProbabilities, topExperts) = probabilities.TopK(choices);
        // The decision comes to the host in one read (one synchronisation on a GPU): the top-K experts and their
        // g, and for Intra-GPU rectification all of g (the best local expert of an unrouted token).
        var read = Options.IntraGpu
            ? HostRead.Doubles(topExperts, topProbabilities, probabilities)
            : HostRead.Doubles(topExperts, topProbabilities);
        long[] choice = read[0].Select(e => (long)e).ToArray();                        // [T·K]
        double[] choiceProbability = read[1];
        double Probability(int token, int j) => choiceProbability[token * choices + j];

        var expert = Enumerable.Repeat(-1, tokens * columns).ToArray();
        var dropped = new bool[tokens * columns];
        var slot = Enumerable.Repeat(-1, tokens * columns).ToArray();
        var kind = new PairKind[tokens * columns];
        var multiplicity = new double[tokens * columns];                                // μ of each pair
        int capacity = Capacity.Of(tokens, k, Experts, Options.CapacityFactor);

        // 1. First choices: each expert keeps its C best by probability.
        var firstChoices = new List<PairCandidate>(tokens * k);
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < k; j++)
                firstChoices.Add(new PairCandidate(Pair(t, j), t, (int)choice[t * choices + j], Probability(t, j)));
        Capacity.Place(firstChoices, Experts, capacity, new int[Experts], DropPolicy.Probs, dropped, slot);
        foreach (var c in firstChoices) { expert[c.Pair] = c.Expert; kind[c.Pair] = PairKind.Primary; }
        int[] firstChoicesPerExpert = Capacity.CountPerExpert(firstChoices, Experts);   // before dropping

        // 2. Fill-ins: the (k+1)-th choices, into the slots after all first choices of their expert.
        if (Options.FillIn && Options.PlaceFillIns)
        {
            var fillIns = new List<PairCandidate>(tokens);
            for (int t = 0; t < tokens; t++)
            {
                double priority = Options.FillPriority switch
                {
                    FillPriority.Top1Gate => Probability(t, 0),
                    _ => Probability(t, k),                       // Score (Position ignores the priority)
                };
                fillIns.Add(new PairCandidate(Pair(t, k), t, (int)choice[t * choices + k], priority));
            }
            var policy = Options.FillPriority == FillPriority.Position ? DropPolicy.Position : DropPolicy.Probs;
            Capacity.Place(fillIns, Experts, capacity, firstChoicesPerExpert, policy, dropped, slot);
            foreach (var c in fillIns) { expert[c.Pair] = c.Expert; kind[c.Pair] = PairKind.FillIn; }
        }
        for (int i = 0; i < expert.Length; i++) multiplicity[i] = expert[i] >= 0 && !dropped[i] ? 1 : 0;

        // 3. Intra-GPU rectification of the unrouted tokens to the best expert on their own device.
        var extras = new Dictionary<string, double>();
        if (Options.IntraGpu)
            Rectify(read[2], tokens, columns, context, expert, dropped, slot, kind, multiplicity, extras);

        // 4. Weights w = μ·g / sg(Σ μ·g), built from g so gradients reach the logits through the kept pairs.
        var weights = RectifiedWeights(probabilities, expert, multiplicity, tokens, columns, Options.FrozenDenominators, out var denominator);
        _lastDenominator = denominator;

        // 5. Regularisers (training only): aux over the first choices before dropping.
        Tensor? aux = null, z = null;
        if (context.Training && Options.AuxLossCoeff > 0 && tokens > 0)
            aux = RouterLosses.Aux(probabilities, firstChoicesPerExpert, k, Options.AuxLossCoeff);
        if (context.Training && Options.ZLossCoeff > 0 && tokens > 0)
            z = RouterLosses.Z(logits, Options.ZLossCoeff);

        return new RoutingPlan(tokens, Experts, columns, expert, weights, dropped, slot, kind, capacity)
        {
            FirstChoiceColumns = k,
            AuxLoss = aux,
            ZLoss = z,
            Extras = extras,
        };
    }

    // IR: for each unrouted token, h = argmax g over the source device's experts, with multiplicity m = K − n.
    private void Rectify(double[] probabilities, int tokens, int columns, RoutingContext context, int[] expert,
        bool[] dropped, int[] slot, PairKind[] kind, double[] multiplicity, Dictionary<string, double> extras)
    {
        int choices = Choices;
        int[] localExperts = context.Placement.ExpertsOn(context.SourceDevice);
        int merged = 0, inPlaceOfDropped = 0, withoutLocalExpert = 0;
        for (int t = 0; t < tokens; t++)
        {
            int row = t * columns;
            int kept = 0;
            for (int i = row; i < row + choices; i++)
                if (expert[i] >= 0 && !dropped[i]) kept++;
            bool unrouted = Options.Unrouted switch
            {
                UnroutedPolicy.All => kept == 0,
                UnroutedPolicy.Any => kept < choices,
                _ => kept < choices - 1,                          // IgnoreKth
            };
            if (!unrouted) continue;
            if (localExperts.Length == 0) { withoutLocalExpert++; continue; }

            int target = localExperts[0];                         // ascending, so ties keep the lower index
            foreach (int e in localExperts)
                if (probabilities[t * Experts + e] > probabilities[t * Experts + target]) target = e;
            int missing = choices - kept;

            int existing = Array.IndexOf(expert, target, row, choices);
            if (existing >= 0 && !dropped[existing])
            {
                multiplicity[existing] += missing;                // h already kept: merge
                merged++;
            }
            else
            {
                // h was dropped by its expert (that pair becomes the rectified one) or not chosen (the IR column).
                int at = existing >= 0 ? existing : row + choices;
                if (existing >= 0) inPlaceOfDropped++;
                expert[at] = target;
                dropped[at] = false;
                slot[at] = -1;
                kind[at] = PairKind.Rectified;
                multiplicity[at] = missing;
            }
        }
        extras["rectify.ir_merged"] = merged;
        extras["rectify.ir_in_place_of_dropped"] = inPlaceOfDropped;
        extras["rectify.ir_without_local_expert"] = withoutLocalExpert;
    }

    // w = μ·g / sg(Σ μ·g) per token; a token with no pair at all (Σ = 0) gets the denominator 1 so its weights are 0.
    private static Tensor RectifiedWeights(Tensor probabilities, int[] expert, double[] multiplicity, int tokens, int columns,
        double[]? frozenDenominators, out Tensor denominator)
    {
        var device = probabilities.Device;
        var dtype = probabilities.DType;
        var index = Tensor.FromHost(expert.Select(e => (long)Math.Max(e, 0)).ToArray(), [tokens, columns], device);
        var mu = HostRead.Constant(multiplicity, [tokens, columns], probabilities);
        var numerator = probabilities.Gather(-1, index).Mul(mu);                        // μ·g, [T, columns]
        var total = numerator.Sum(-1, keepDim: true).Detach();                          // sg(Σ μ·g), [T, 1]
        // 1 where Σ = 0, on the device (no read): adding 0 elsewhere leaves the other denominators exact.
        var emptyRow = total.Eq(Tensor.Scalar(0, dtype, device));
        denominator = frozenDenominators is null
            ? total.Add(emptyRow)
            : HostRead.Constant(frozenDenominators, [tokens, 1], probabilities);
        return numerator.Div(denominator);
    }
}
