// TopK routing (GShard / Megatron / Mixtral), ROUTERS.md §1.
//
// Logits l ∈ R^{T×E} (T tokens of one source device, E experts), k choices per token, s = softmax(l) over all E.
//
//   Choice and gate g (option Normalization):
//     PreSoftmax     experts = top-k of s,  g = s at those experts                 (Σ g ≤ 1)
//     PostSoftmax    experts = top-k of l,  g = softmax over those k logits          (Σ g = 1; k = 1 is an error:
//                                                                                   g ≡ 1, no gradient)
//     SoftmaxRenorm  experts = top-k of s,  g = s / Σ_{top-k} s                     (Σ g = 1, Mixtral)
//   Top-k ties: the lower expert index first.
//
//   Straight-through top-1 (k = 1): w = g − sg(g) + 1, forward exactly 1, gradient that of g. Here g is the
//   chosen expert's probability s (the PreSoftmax gate): renormalising a single value would give the constant 1,
//   whose gradient is 0, so SoftmaxRenorm also uses s.
//
//   Capacity (optional, CF = null is dropless): C = ceil(T·k/E · CF) per expert, from these T tokens.
//     Drop policy Probs:    each expert keeps its C pairs with the highest g (ties: lower token index first);
//     Drop policy Position: each expert keeps its first C pairs in token order.
//     A kept pair's slot is its position among the expert's kept pairs in token order (0 … C−1).
//     Dropped pairs keep their expert in the plan but get weight 0; nothing is renormalised, so a token may keep
//     fewer than k pairs or none.
//   Weights: w = g · keep, keep ∈ {0, 1} (a constant mask: gradients reach l only through kept weights).
//
//   Aux loss (coefficient a, 0 = off): a · E/(k·T²) · Σ_e (Σ_t s_te) · count_e, count_e = pairs before dropping.
//   z-loss   (coefficient z, 0 = off): z · mean_t (logsumexp_e l_te)².
//   Both only in a training forward (RoutingContext.Training).

namespace PureMoE.Moe.Routing;

/// <summary>How TopK turns scores into gate weights.</summary>
public enum TopKNormalization
{
    /// <summary>Softmax over all experts, top-k of the probabilities, not renormalised (Σ ≤ 1).</summary>
    PreSoftmax,
    /// <summary>Top-k of the logits, softmax over those k (Megatron's default; needs k ≥ 2).</summary>
    PostSoftmax,
    /// <summary>Softmax over all experts, top-k, divided by their sum (Mixtral).</summary>
    SoftmaxRenorm,
}

/// <summary>Options of <see cref="TopKRouter"/> (ROUTERS.md §1).</summary>
public sealed record TopKOptions
{
    /// <summary>Experts per token k (1 ≤ k ≤ E).</summary>
    public int K { get; init; } = 2;

    /// <summary>How gate weights are formed from the logits.</summary>
    public TopKNormalization Normalization { get; init; } = TopKNormalization.SoftmaxRenorm;

    /// <summary>Capacity factor CF (> 0); null routes without capacity (dropless).</summary>
    public double? CapacityFactor { get; init; }

    /// <summary>Which pairs an over-subscribed expert keeps.</summary>
    public DropPolicy DropPolicy { get; init; } = DropPolicy.Probs;

    /// <summary>Every expert computes exactly C rows, zero rows where pairs are missing (needs a capacity).</summary>
    public bool PadToCapacity { get; init; }

    /// <summary>Top-1 straight-through: forward weight 1, gradient that of the probability (needs k = 1).</summary>
    public bool StraightThroughTop1 { get; init; }

    /// <summary>Coefficient a of the load-balancing loss (0 = off; 0.01 is usual).</summary>
    public double AuxLossCoeff { get; init; }

    /// <summary>Coefficient z of the router z-loss (0 = off; 1e-3 is usual).</summary>
    public double ZLossCoeff { get; init; }

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first invalid option for E experts.</summary>
    public void Validate(int experts)
    {
        if (experts < 1) throw new ArgumentException($"TopKRouter: experts = {experts} must be ≥ 1");
        if (K < 1 || K > experts) throw new ArgumentException($"TopKOptions.K = {K} must be in [1, {experts}] (the number of experts)");
        if (CapacityFactor is double cf && (!double.IsFinite(cf) || cf <= 0))
            throw new ArgumentException($"TopKOptions.CapacityFactor = {cf} must be a finite number > 0 (or null for dropless)");
        if (Normalization == TopKNormalization.PostSoftmax && K == 1)
            throw new ArgumentException("TopKOptions.Normalization = PostSoftmax with K = 1 is an error: the softmax of one value is 1, its gradient 0");
        if (StraightThroughTop1 && K != 1)
            throw new ArgumentException($"TopKOptions.StraightThroughTop1 needs K = 1, got K = {K}");
        if (PadToCapacity && CapacityFactor is null)
            throw new ArgumentException("TopKOptions.PadToCapacity = true needs a CapacityFactor (padding is to capacity)");
        if (!(AuxLossCoeff >= 0) || !double.IsFinite(AuxLossCoeff))
            throw new ArgumentException($"TopKOptions.AuxLossCoeff = {AuxLossCoeff} must be a finite number ≥ 0");
        if (!(ZLossCoeff >= 0) || !double.IsFinite(ZLossCoeff))
            throw new ArgumentException($"TopKOptions.ZLossCoeff = {ZLossCoeff} must be a finite number ≥ 0");
    }
}

/// <summary>
/// Vanilla TopK routing with optional capacity, drop policy, padding, straight-through top-1, aux loss and z-loss
/// (ROUTERS.md §1; the math is at the top of this file).
/// </summary>
public sealed class TopKRouter : IRouter
{
    /// <summary>A TopK router over <paramref name="experts"/> experts; invalid options throw ArgumentException.</summary>
    public TopKRouter(int experts, TopKOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(experts);
        Experts = experts;
        Options = options;
    }

    /// <inheritdoc />
    public string Name => "topk";

    /// <inheritdoc />
    public int Experts { get; }

    /// <summary>The options.</summary>
    public TopKOptions Options { get; }

    /// <inheritdoc />
    public RoutingPlan Route(Tensor logits, RoutingContext context)
    {
        RouterChecks.CheckInputs("TopKRouter", logits, context, Experts);
        int tokens = logits.Shape[0], k = Options.K;

        // 1. Choose k experts per token and form their gates g [T, k].
        var probabilities = logits.Softmax(-1);                                      // s, [T, E]
        var (gate, chosen) = ChooseAndGate(logits, probabilities);
        int[] expert = chosen.ToLongArray().Select(e => (int)e).ToArray();            // [T·k], token-major
        double[] gateValues = gate.ToDoubleArray();

        // 2. Capacity: decide on the host which pairs each expert keeps, and their slots.
        var candidates = new PairCandidate[tokens * k];
        for (int pair = 0; pair < candidates.Length; pair++)
            candidates[pair] = new PairCandidate(pair, pair / k, expert[pair], gateValues[pair]);
        var dropped = new bool[tokens * k];
        var slot = Enumerable.Repeat(-1, tokens * k).ToArray();
        int? capacity = Options.CapacityFactor is double cf ? Capacity.Of(tokens, k, Experts, cf) : null;
        if (capacity is int c)
            Capacity.Place(candidates, Experts, c, new int[Experts], Options.DropPolicy, dropped, slot);

        // 3. Weights: straight-through replaces the forward value by 1; dropped pairs are masked to 0.
        if (Options.StraightThroughTop1) gate = gate.Sub(gate.Detach()).AddScalar(1.0);
        // float32 on the host side: ILGPU devices hold no float64, and 0 and 1 convert exactly to any dtype.
        var keep = Tensor.FromHost(dropped.Select(d => d ? 0f : 1f).ToArray(), [tokens, k], logits.Device).To(logits.DType);
        var weights = gate.Mul(keep);

        // 4. Regularisers (training only): counts are the pairs chosen, before dropping.
        Tensor? aux = null, z = null;
        if (context.Training && Options.AuxLossCoeff > 0 && tokens > 0)
            aux = RouterLosses.Aux(probabilities, Capacity.CountPerExpert(candidates, Experts), k, Options.AuxLossCoeff);
        if (context.Training && Options.ZLossCoeff > 0 && tokens > 0)
            z = RouterLosses.Z(logits, Options.ZLossCoeff);

        var kind = Enumerable.Repeat(PairKind.Primary, tokens * k).ToArray();
        return new RoutingPlan(tokens, Experts, k, expert, weights, dropped, slot, kind, capacity, Options.PadToCapacity)
        {
            AuxLoss = aux,
            ZLoss = z,
        };
    }

    // The chosen experts [T, k] (int64) and their gates g [T, k], per the normalisation option. With
    // straight-through, g is the top-1 probability whatever the normalisation (see the top of the file).
    private (Tensor Gate, Tensor Chosen) ChooseAndGate(Tensor logits, Tensor probabilities)
    {
        int k = Options.K;
        if (Options.Normalization == TopKNormalization.PostSoftmax)
        {
            var (topLogits, chosenByLogit) = logits.TopK(k);
            return (topLogits.Softmax(-1), chosenByLogit);
        }
        var (topProbabilities, chosen) = probabilities.TopK(k);
        if (Options.Normalization == TopKNormalization.SoftmaxRenorm && !Options.StraightThroughTop1)
            return (topProbabilities.Div(topProbabilities.Sum(-1, keepDim: true)), chosen);
        return (topProbabilities, chosen);
    }
}
