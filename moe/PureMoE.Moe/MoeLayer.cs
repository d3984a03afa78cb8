using PureMoE.Moe.Dispatch;
using PureMoE.Moe.Experts;
using PureMoE.Moe.Parallel;
using PureMoE.Moe.Routing;
using PureMoE.Nn;

namespace PureMoE.Moe;

/// <summary>
/// A Mixture-of-Experts layer: route → dispatch → experts → combine. The router (any <see cref="IRouter"/>) turns
/// router logits l = x·W_rᵀ into a <see cref="RoutingPlan"/>; the tokens are sorted by expert, run through the
/// SwiGLU experts as grouped matrix products, and scattered back weighted by their gates:
/// y_t = Σ_(e,w) ∈ plan(t) w · Expert_e(x_t) (0 for a token with no pair). Parameter names follow Hugging Face
/// Mixtral's block_sparse_moe: gate.weight [E, d], experts.{e}.w1/w2/w3.weight.
/// </summary>
public sealed class MoeLayer : Module, PureMoE.Models.IMoeBlock
{
    /// <summary>Creates a layer of SwiGLU experts d → ff → d (as many as the router has) routed by <paramref name="router"/>.</summary>
    public MoeLayer(int hiddenSize, int intermediateSize, IRouter router, Rng rng, double initStd = 0.02,
        DType dtype = DType.Float32, Device? device = null, ExpertPlacement? placement = null)
    {
        HiddenSize = hiddenSize;
        Router = router;
        Gate = RegisterModule("gate", new Linear(hiddenSize, router.Experts, rng, bias: false, initStd, dtype, device));
        Experts = RegisterModule("experts", new SwiGluExperts(router.Experts, hiddenSize, intermediateSize, rng, initStd, dtype, device));
        Placement = placement ?? ExpertPlacement.Single(router.Experts);
        if (Placement.Experts != router.Experts)
            throw new ArgumentException($"MoeLayer: placement covers {Placement.Experts} experts, the router {router.Experts}");
    }

    /// <summary>Model width d.</summary>
    public int HiddenSize { get; }

    /// <summary>The router.</summary>
    public IRouter Router { get; set; }

    /// <summary>The router projection W_r [E, d] (no bias).</summary>
    public Linear Gate { get; }

    /// <summary>The experts.</summary>
    public SwiGluExperts Experts { get; }

    /// <summary>Where the experts live (Rectify's Intra-GPU rectification and C2R read it).</summary>
    public ExpertPlacement Placement { get; set; }

    /// <summary>The device the tokens of this layer come from (their "own" device).</summary>
    public int SourceDevice { get; set; }

    /// <summary>The plan of the last forward.</summary>
    public RoutingPlan? LastPlan { get; private set; }

    /// <summary>The routing statistics of the last forward.</summary>
    public RoutingStats? LastStats { get; private set; }

    /// <summary>x [..., d] → y of the same shape.</summary>
    public Tensor Forward(Tensor x)
    {
        if (x.Shape[-1] != HiddenSize)
            throw new ArgumentException($"MoeLayer: input {x.Shape} needs last dimension {HiddenSize}");
        var shape = x.Shape.ToArray();
        int tokens = x.Numel / HiddenSize;
        var flat = x.Reshape(tokens, HiddenSize);

        var logits = Gate.Forward(flat);                                           // [T, E]
        var context = new RoutingContext { Placement = Placement, SourceDevice = SourceDevice, Training = IsTraining };
        var plan = Router.Route(logits, context);
        plan.DebugValidate();
        LastPlan = plan;
        LastStats = RoutingStats.From(plan);

        var layout = DispatchLayout.Build(plan, x.Device);
        var rows = layout.Gather(flat);                                             // [N, d], expert-major
        var expertOut = Experts.Forward(rows, layout.GroupSizes);                   // [N, d]
        return layout.Combine(expertOut, plan.Weights, tokens).Reshape(shape);
    }

    /// <summary>The router's regularisers of the last forward (aux, z, sparsity), or null.</summary>
    public Tensor? LastRegularizationLoss => LastPlan?.RegularizationLoss;
}
