using PureMoE.Moe.Parallel;

namespace PureMoE.Moe.Routing;

/// <summary>What a router may know besides the logits: where experts live, where the tokens come from.</summary>
public sealed record RoutingContext
{
    /// <summary>Expert → device map (a single device by default).</summary>
    public required ExpertPlacement Placement { get; init; }

    /// <summary>
    /// The device the routed tokens live on (their "own" device for Intra-GPU rectification). Each rank routes its
    /// own tokens, so capacity is decided per source device, as in the papers.
    /// </summary>
    public int SourceDevice { get; init; }

    /// <summary>Training forward (regularisers computed, adaptive state may update) or evaluation.</summary>
    public bool Training { get; init; } = true;

    /// <summary>A single-device context for <paramref name="experts"/> experts.</summary>
    public static RoutingContext SingleDevice(int experts, bool training = true) =>
        new() { Placement = ExpertPlacement.Single(experts), Training = training };
}

/// <summary>
/// A router decides, for each token, which experts and with what gate weight (and, where capacity applies, which
/// slots). It returns a <see cref="RoutingPlan"/>; dispatch, experts, exchange and combine only read the plan.
/// A new router is one class implementing this interface.
/// </summary>
public interface IRouter
{
    /// <summary>A short name ("topk", "rectify", "relu", "c2r").</summary>
    string Name { get; }

    /// <summary>Number of experts E the router chooses among.</summary>
    int Experts { get; }

    /// <summary>Routes T tokens given their router logits [T, E] (float32 or float64; differentiable).</summary>
    RoutingPlan Route(Tensor logits, RoutingContext context);
}

/// <summary>A router with state that adapts after each optimizer step (ReMoE's λ).</summary>
public interface IAdaptiveRouter : IRouter
{
    /// <summary>Called once after every optimizer step with the plans this router made during that step.</summary>
    void AfterOptimizerStep(IReadOnlyList<RoutingPlan> plans);
}
