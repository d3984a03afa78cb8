using PureMoE.Moe.Routing;

namespace PureMoE.Bench;

/// <summary>
/// Mixtral routing for the benchmark while the real TopKRouter has not landed: softmax over all E experts, top-k,
/// renormalised to sum 1, dropless (the same algorithm as the tests' SoftmaxTopKTestRouter and HF's
/// MixtralSparseMoeBlock).
/// </summary>
internal sealed class BenchTopKRouter(int experts, int k) : IRouter
{
    public string Name => "bench-topk";

    public int Experts => experts;

    public RoutingPlan Route(Tensor logits, RoutingContext context)
    {
        var (w, idx) = logits.Softmax(-1).TopK(k);
        w = w.Div(w.Sum(-1, keepDim: true));
        long[] chosen = idx.ToArray<long>();
        var expert = new int[chosen.Length];
        for (int i = 0; i < chosen.Length; i++)
        {
            expert[i] = (int)chosen[i];
        }

        return new RoutingPlan(logits.Shape[0], experts, k, expert, w);
    }
}
