using PureMoE;
using PureMoE.Moe.Dispatch;
using PureMoE.Moe.Routing;

public static class RoutingPlanTour
{
    // Route 6 tokens over 4 experts by hand and look at the plan and the expert-major dispatch order.
    public static (int[] Experts, bool[] Dropped, int[] GroupSizes, long[] RowToken) Run(IRouter router)
    {
        var logits = Tensor.Randn(new Shape(6, 4), new Rng(5));           // l = x·W_rᵀ, [T, E]
        RoutingPlan plan = router.Route(logits, RoutingContext.SingleDevice(experts: 4));
        var layout = DispatchLayout.Build(plan, Device.Cpu);              // kept pairs sorted by expert
        return (plan.Expert, plan.Dropped, layout.GroupSizes, layout.RowToken.ToLongArray());
    }
}
