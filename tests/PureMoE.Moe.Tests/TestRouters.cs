using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Tests;

/// <summary>Softmax over all experts, top-k, renormalised (Mixtral), dropless: a minimal router for layer tests.</summary>
internal sealed class SoftmaxTopKTestRouter(int experts, int k) : IRouter
{
    public string Name => "test-topk";
    public int Experts => experts;

    public RoutingPlan Route(Tensor logits, RoutingContext context)
    {
        var (w, idx) = logits.Softmax(-1).TopK(k);
        w = w.Div(w.Sum(-1, keepDim: true));
        int t = logits.Shape[0];
        return new RoutingPlan(t, experts, k, idx.ToArray<long>().Select(e => (int)e).ToArray(), w);
    }
}

/// <summary>Returns a fixed choice of experts and slots; weights are softmax probabilities at those experts.</summary>
internal sealed class FixedPlanRouter(int experts, int[] expert, bool[] dropped, int[] slot, int capacity, bool pad, int m) : IRouter
{
    public string Name => "test-fixed";
    public int Experts => experts;

    public RoutingPlan Route(Tensor logits, RoutingContext context)
    {
        int t = logits.Shape[0];
        var idx = Tensor.FromArray(expert.Select(e => (long)Math.Max(e, 0)).ToArray(), t, m);
        var keep = Tensor.FromArray(expert.Select((e, i) => e >= 0 && !dropped[i] ? 1.0 : 0.0).ToArray(), t, m).To(logits.DType);
        var w = logits.Softmax(-1).Gather(-1, idx).Mul(keep);
        var kind = expert.Select(e => e >= 0 ? PairKind.Primary : PairKind.None).ToArray();
        return new RoutingPlan(t, experts, m, expert, w, dropped, slot, kind, capacity, pad);
    }
}
