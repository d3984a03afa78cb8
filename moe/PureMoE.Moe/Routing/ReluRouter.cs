// ReMoE: fully differentiable MoE with ReLU routing (arXiv 2412.14711; ROUTERS.md §3).
//
//   logits   l = x·W_rᵀ                                  [T, E]
//   gates    R = relu(l)                                  [T, E]   (no softmax, no top-k, no capacity, no renormalisation)
//   experts  of token t: { e : l_te > 0 }                 (0 to E of them)
//   output   y_t = Σ_e R_te · Expert_e(x_t)
//
// Sparsity regulariser (training forwards only; the trainer sums it over MoE layers):
//
//   L = λ · E / (k·T²) · Σ_e ( Σ_t R_te ) · count_e,       count_e = #{ t : R_te > 0 }   (a constant: no gradient)
//
// It is an L1 penalty on the gates, weighted per expert by that expert's load, so busy experts are pushed
// harder towards zero than idle ones (the "load-balanced" form). k never limits how many experts a token uses;
// it only sets the target sparsity τ = 1 − k/E.
//
// Adaptive λ, after every optimizer step (fp32 state, saved in checkpoints):
//
//   S = 1 − nnz(R) / (T·E)     averaged over the MoE layers (plans) of that step
//   λ ← λ·α  if S < τ          (too dense: push harder)
//   λ ← λ/α  otherwise         (sparse enough: ease off)
//
// Defaults λ₀ = 1e-8, α = 1.2. Left alone, λ climbs from 1e-8 until the penalty bites, and training passes through
// three stages: near-dense, sparsifying, and stable with S oscillating around τ.
//
// λ lives in a ReluLambda object. One ReluLambda shared by the routers of all layers is the paper's global λ;
// one per router is the per-layer option (ReMoE issue #6: a single global λ can drive single layers to 100%
// sparsity early). ReluRouter.ForLayers builds either.

namespace PureMoE.Moe.Routing;

/// <summary>Settings of ReMoE's ReLU router and its adaptive λ.</summary>
public sealed record ReluRouterOptions
{
    /// <summary>The k the sparsity is aimed at: target sparsity τ = 1 − k/E. It does not limit experts per token.</summary>
    public int K { get; init; } = 2;

    /// <summary>Initial regularisation coefficient λ₀ (default 1e-8).</summary>
    public float InitialLambda { get; init; } = 1e-8f;

    /// <summary>Multiplicative step α &gt; 1 of the λ controller (default 1.2).</summary>
    public float Alpha { get; init; } = 1.2f;
}

/// <summary>
/// ReMoE's adaptive regularisation coefficient λ, stored in fp32 as in the paper. Routers that share one instance
/// share one λ (the paper's global λ); a router with its own instance has a per-layer λ.
/// </summary>
/// <remarks>
/// <para>Update protocol: every member router reports the sparsity of its plans after the optimizer step
/// (<see cref="ReluRouter.AfterOptimizerStep"/>). Once every member has reported, λ takes one step using the mean
/// sparsity over all reported plans, and the reports are cleared. So a shared λ moves once per step, however many
/// layers share it, and a per-layer λ moves on its own layer's report.</para>
/// <para>Checkpoints: λ is state, not a parameter. <see cref="StateDict"/> gives it as a float32 scalar tensor
/// named <c>"{prefix}lambda"</c> (routers use the prefix <c>"router_state."</c>); <see cref="LoadStateDict"/> reads
/// it back. Pending reports of a half-finished step are not saved (checkpoints are taken between steps).</para>
/// </remarks>
public sealed class ReluLambda
{
    private readonly List<ReluRouter> _members = [];
    private readonly HashSet<ReluRouter> _reported = [];
    private double _reportedSparsitySum;
    private int _reportedPlans;

    /// <summary>Creates λ = <paramref name="initial"/> with step <paramref name="alpha"/>.</summary>
    public ReluLambda(float initial = 1e-8f, float alpha = 1.2f)
    {
        CheckSettings(initial, alpha, "ReluLambda");
        Value = initial;
        Alpha = alpha;
    }

    internal static void CheckSettings(float initial, float alpha, string who)
    {
        if (!float.IsFinite(initial) || initial <= 0)
            throw new ArgumentException($"{who}: InitialLambda = {initial} must be finite and > 0", "options");
        if (!float.IsFinite(alpha) || alpha <= 1)
            throw new ArgumentException($"{who}: Alpha = {alpha} must be finite and > 1", "options");
    }

    /// <summary>The current coefficient λ (fp32).</summary>
    public float Value { get; set; }

    /// <summary>The multiplicative step α.</summary>
    public float Alpha { get; }

    /// <summary>Steps λ has taken (updates applied).</summary>
    public long Updates { get; private set; }

    /// <summary>The routers sharing this λ.</summary>
    public IReadOnlyList<ReluRouter> Members => _members;

    /// <summary>The mean sparsity S that drove the last update (NaN before the first).</summary>
    public double LastSparsity { get; private set; } = double.NaN;

    internal void Join(ReluRouter router) => _members.Add(router);

    /// <summary>
    /// One controller step: λ·α when the sparsity <paramref name="sparsity"/> is below the target
    /// <paramref name="target"/> (too many active gates), λ/α otherwise. Computed in fp32, like the paper's state.
    /// </summary>
    public void Step(double sparsity, double target)
    {
        Value = sparsity < target ? Value * Alpha : Value / Alpha;
        LastSparsity = sparsity;
        Updates++;
    }

    /// <summary>
    /// A member router reports the sparsities of the plans it made in this optimizer step; λ steps once every
    /// member has reported. Returns true when this report completed the step (λ moved).
    /// </summary>
    internal bool Report(ReluRouter router, IReadOnlyList<double> sparsities, double target)
    {
        if (!_reported.Add(router))
            throw new InvalidOperationException(
                $"ReluLambda: router '{router.Name}' (E = {router.Experts}) reported twice in one optimizer step before the " +
                $"other {_members.Count - _reported.Count} router(s) sharing this λ reported; call AfterOptimizerStep once " +
                "per router per step (a router instance used by several layers gets all their plans in one call)");
        foreach (double s in sparsities) _reportedSparsitySum += s;
        _reportedPlans += sparsities.Count;
        if (_reported.Count < _members.Count) return false;

        bool moved = _reportedPlans > 0;                 // a step in which no layer routed anything leaves λ alone
        if (moved) Step(_reportedSparsitySum / _reportedPlans, target);
        _reported.Clear();
        _reportedSparsitySum = 0;
        _reportedPlans = 0;
        return moved;
    }

    /// <summary>λ as state for a checkpoint: <c>"{prefix}lambda"</c> → float32 scalar.</summary>
    public IReadOnlyDictionary<string, Tensor> StateDict(string prefix = "") =>
        new Dictionary<string, Tensor> { [prefix + "lambda"] = Tensor.Scalar(Value, DType.Float32) };

    /// <summary>Reads λ back from <c>"{prefix}lambda"</c> (a one-element tensor, finite and &gt; 0).</summary>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, string prefix = "")
    {
        string key = prefix + "lambda";
        if (!state.TryGetValue(key, out var t))
            throw new KeyNotFoundException($"ReluLambda: checkpoint has no '{key}'");
        if (t.Numel != 1) throw new ArgumentException($"ReluLambda: '{key}' must hold one value, got {t.Shape}");
        float v = (float)t.Item();
        if (!float.IsFinite(v) || v <= 0) throw new ArgumentException($"ReluLambda: '{key}' = {v} must be finite and > 0");
        Value = v;
    }
}

/// <summary>
/// ReMoE's ReLU router (ROUTERS.md §3): gates relu(l), a token uses exactly the experts with positive logit,
/// sparsity controlled by an L1 regulariser whose coefficient λ adapts after every optimizer step. Plans have
/// m = E slots: slot e holds expert e when l_te &gt; 0, else it is empty (weight 0).
/// </summary>
public sealed class ReluRouter : IAdaptiveRouter
{
    /// <summary>The key of λ in <see cref="StateDict"/>.</summary>
    public const string LambdaStateKey = "router_state.lambda";

    /// <summary>
    /// Creates a router over <paramref name="experts"/> experts. Pass a <paramref name="lambda"/> shared with other
    /// layers' routers for the global λ (its own λ₀ and α then apply, not the options'); without one the router
    /// gets its own λ (per-layer) from the options.
    /// </summary>
    public ReluRouter(int experts, ReluRouterOptions? options = null, ReluLambda? lambda = null)
    {
        Options = options ?? new ReluRouterOptions();
        if (experts < 1) throw new ArgumentException($"ReluRouter: Experts must be ≥ 1, got {experts}", nameof(experts));
        if (Options.K < 1 || Options.K > experts)
            throw new ArgumentException($"ReluRouter: K = {Options.K} must lie in [1, {experts}] (E = {experts})", nameof(options));
        ReluLambda.CheckSettings(Options.InitialLambda, Options.Alpha, "ReluRouter");
        Experts = experts;
        Lambda = lambda ?? new ReluLambda(Options.InitialLambda, Options.Alpha);
        Lambda.Join(this);
    }

    /// <summary>
    /// Routers for <paramref name="layers"/> MoE layers: sharing one λ (the paper, default) or, with
    /// <paramref name="perLayerLambda"/>, one λ each.
    /// </summary>
    public static IReadOnlyList<ReluRouter> ForLayers(int layers, int experts, ReluRouterOptions? options = null, bool perLayerLambda = false)
    {
        if (layers < 1) throw new ArgumentException($"ReluRouter.ForLayers: layers must be ≥ 1, got {layers}", nameof(layers));
        var o = options ?? new ReluRouterOptions();
        var shared = perLayerLambda ? null : new ReluLambda(o.InitialLambda, o.Alpha);
        return Enumerable.Range(0, layers).Select(_ => new ReluRouter(experts, o, shared)).ToArray();
    }

    /// <inheritdoc />
    public string Name => "relu";

    /// <inheritdoc />
    public int Experts { get; }

    /// <summary>The options.</summary>
    public ReluRouterOptions Options { get; }

    /// <summary>The (possibly shared) adaptive coefficient λ.</summary>
    public ReluLambda Lambda { get; }

    /// <summary>Target sparsity τ = 1 − k/E.</summary>
    public double TargetSparsity => 1.0 - (double)Options.K / Experts;

    /// <inheritdoc />
    public RoutingPlan Route(Tensor logits, RoutingContext context)
    {
        if (logits.Rank != 2 || logits.Shape[1] != Experts)
            throw new ArgumentException($"ReluRouter: logits {logits.Shape} must be [T, {Experts}]");
        int tokens = logits.Shape[0], experts = Experts;

        // The gates are the weights: slot e of token t carries R_te, which is 0 exactly where the slot is empty.
        var gates = logits.Relu();                                                   // R [T, E]

        // Slot e holds expert e when its logit is positive. The mask comes from the logits themselves, so it is
        // the same test as the gate's (relu(l) > 0 ⇔ l > 0), and it carries no gradient.
        double[] logitValues = logits.ToDoubleArray();
        var expert = new int[tokens * experts];
        var activeTokens = new double[experts];                                      // count_e
        int active = 0;
        for (int t = 0; t < tokens; t++)
            for (int e = 0; e < experts; e++)
            {
                int i = t * experts + e;
                if (logitValues[i] > 0) { expert[i] = e; activeTokens[e]++; active++; }
                else expert[i] = -1;
            }
        double sparsity = tokens == 0 ? 0 : 1.0 - (double)active / (tokens * experts);

        Tensor? sparsityLoss = null;
        if (context.Training && tokens > 0)
        {
            // L = λ · E/(k·T²) · Σ_e (Σ_t R_te) · count_e; count_e enters as a constant tensor.
            var gateMassPerExpert = gates.Sum(0);                                    // Σ_t R_te [E]
            var counts = HostRead.Constant(activeTokens, [experts], logits);
            double scale = Lambda.Value * (double)experts / ((double)Options.K * tokens * tokens);
            sparsityLoss = gateMassPerExpert.Mul(counts).Sum().MulScalar(scale);
        }

        return new RoutingPlan(tokens, experts, experts, expert, gates)
        {
            SparsityLoss = sparsityLoss,
            Extras = new Dictionary<string, double> { ["sparsity"] = sparsity, ["lambda"] = Lambda.Value },
        };
    }

    /// <summary>
    /// Reports the sparsity S = 1 − nnz(R)/(T·E) of each plan made in this step to <see cref="Lambda"/>, which
    /// steps once all routers sharing it have reported: λ·α if the mean S is below τ, else λ/α. Call it only
    /// after training steps (evaluation forwards must not move λ). An empty list still counts as this router's
    /// report (it routed nothing).
    /// </summary>
    public void AfterOptimizerStep(IReadOnlyList<RoutingPlan> plans)
    {
        var sparsities = new double[plans.Count];
        for (int p = 0; p < plans.Count; p++)
        {
            var plan = plans[p];
            if (plan.Experts != Experts || plan.SlotsPerToken != Experts)
                throw new ArgumentException(
                    $"ReluRouter.AfterOptimizerStep: plan {p} has E = {plan.Experts}, m = {plan.SlotsPerToken}; a ReLU plan has m = E = {Experts}");
            sparsities[p] = Sparsity(plan);
        }
        Lambda.Report(this, sparsities, TargetSparsity);
    }

    /// <summary>S = 1 − nnz(R)/(T·E): the fraction of (token, expert) gates that are zero (0 for an empty plan).</summary>
    public static double Sparsity(RoutingPlan plan)
    {
        if (plan.Tokens == 0 || plan.Experts == 0) return 0;
        int active = plan.Expert.Count(e => e >= 0);
        return 1.0 - (double)active / ((double)plan.Tokens * plan.Experts);
    }

    /// <summary>This router's state for a checkpoint: <see cref="LambdaStateKey"/> → λ (float32 scalar).</summary>
    public IReadOnlyDictionary<string, Tensor> StateDict() => Lambda.StateDict("router_state.");

    /// <summary>Restores λ from <see cref="LambdaStateKey"/> (a shared λ is restored for all its routers).</summary>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state) => Lambda.LoadStateDict(state, "router_state.");
}
