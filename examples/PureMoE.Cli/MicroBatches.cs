using PureMoE.Models;
using PureMoE.Moe;
using PureMoE.Moe.Models;
using PureMoE.Moe.Routing;

namespace PureMoE.Cli;

/// <summary>
/// Gradient accumulation (<c>--accum N</c>): a step's batch of N·B sequences runs as N micro-batches of B, each
/// forward and backward in its own <see cref="DeviceScope"/>, so only one micro-batch's activations are alive at a
/// time while the parameters' gradients (kept into the step's scope) add up across them. Each micro-batch's loss is
/// scaled by 1/N, so the gradient is that of the mean loss over the whole batch, as one forward over it would give
/// (up to the order of float additions; routing with capacity, and the routers' batch-level regularisers, see one
/// micro-batch at a time, as in Megatron and Hugging Face's trainers). On an ILGPU device each micro-batch reads its
/// loss and regulariser values back once, besides each MoE layer's routing decision: N such reads per step.
/// </summary>
public static class MicroBatches
{
    /// <summary>What the micro-batches before the last one leave for the step.</summary>
    /// <param name="LossSum">Σ of their language-model losses (not scaled).</param>
    /// <param name="Stats">Their routing statistics, one list per micro-batch (per layer inside).</param>
    /// <param name="Plans">Their routing plans per layer, for the adaptive routers' update after the optimizer step.</param>
    public sealed record Earlier(double LossSum, IReadOnlyList<IReadOnlyList<RoutingStats?>> Stats, IReadOnlyList<List<RoutingPlan>> Plans);

    /// <summary>
    /// Forward and backward of micro-batches 0 … N−2 of <paramref name="batch"/> (<c>[N·B, seq + 1]</c> tokens), each in
    /// its own scope; the gradients stay in the caller's scope. The caller runs the last micro-batch itself, in the
    /// step's scope, as a step without accumulation does (so N = 1 is exactly that step), and combines with
    /// <see cref="Loss"/>, <see cref="Stats"/> and <see cref="Plans"/>.
    /// </summary>
    public static Earlier RunAllButLast(MixtralForCausalLM model, Tensor batch, int count, Device device)
    {
        var plans = Enumerable.Range(0, MoeMixtral.Layers(model).Count).Select(_ => new List<RoutingPlan>()).ToArray();
        var stats = new List<IReadOnlyList<RoutingStats?>>();
        double lossSum = 0;
        for (int m = 0; m < count - 1; m++)
        {
            using var scope = DeviceScope.Begin(reuseHostMemory: true);
            var loss = ForwardBackward(model, Micro(batch, m, count), count, device);
            var (value, layerStats) = StepValues.Read(loss, model);
            lossSum += value;
            stats.Add(layerStats);
            var last = MoeMixtral.LastPlans(model);
            for (int i = 0; i < plans.Length; i++)
                foreach (var plan in last[i])
                {
                    // The plan outlives this scope (λ's update reads it after the optimizer step): keep its tensors.
                    foreach (var t in new[] { plan.Weights, plan.AuxLoss, plan.ZLoss, plan.SparsityLoss })
                        if (t is not null) scope.Keep(t);
                    plans[i].Add(plan);
                }
            // Activations go back to the pool with the scope; the gradients live on in the step's scope.
            scope.Keep(model);
        }
        return new Earlier(lossSum, stats, plans);
    }

    /// <summary>Rows [m·B, (m+1)·B) of a batch of <paramref name="count"/> micro-batches (the batch itself when count is 1).</summary>
    public static Tensor Micro(Tensor batch, int m, int count)
    {
        if (count == 1) return batch;
        int rows = batch.Shape[0] / count;
        return batch.Narrow(0, m * rows, rows);
    }

    /// <summary>
    /// One micro-batch's forward and backward: the language-model loss plus the routers' regularisers, scaled by
    /// 1/<paramref name="count"/> for the backward. Returns the unscaled language-model loss.
    /// </summary>
    public static Tensor ForwardBackward(MixtralForCausalLM model, Tensor micro, int count, Device device)
    {
        var loss = model.Loss(micro.To(device));
        // The routers' regularisers (aux, z, ReMoE's sparsity loss) join the language-model loss.
        var total = model.RegularizationLoss() is Tensor reg ? loss.Add(reg) : loss;
        (count == 1 ? total : total.MulScalar(1.0 / count)).Backward();
        return loss;
    }

    /// <summary>The step's loss: the mean over its micro-batches (the last one's value itself when there is one).</summary>
    public static double Loss(Earlier earlier, double lastLoss, int count) =>
        count == 1 ? lastLoss : (earlier.LossSum + lastLoss) / count;

    /// <summary>
    /// The step's routing statistics per layer: all micro-batches' taken together (counts summed, load over every
    /// token), the regularisers' values averaged as the loss averages them.
    /// </summary>
    public static IReadOnlyList<RoutingStats?> Stats(Earlier earlier, IReadOnlyList<RoutingStats?> last, int count)
    {
        if (count == 1) return last;
        var all = earlier.Stats.Append(last).ToArray();
        return Enumerable.Range(0, last.Count).Select(i =>
        {
            if (all.Any(s => s[i] is null)) return last[i];
            var merged = RoutingStats.Merge(all.Select(s => s[i]!).ToArray());
            return merged with { AuxLoss = merged.AuxLoss / count, ZLoss = merged.ZLoss / count, SparsityLoss = merged.SparsityLoss / count };
        }).ToArray();
    }

    /// <summary>The step's routing plans per layer: the earlier micro-batches' and the last one's.</summary>
    public static IReadOnlyList<IReadOnlyList<RoutingPlan>> Plans(Earlier earlier, IReadOnlyList<IReadOnlyList<RoutingPlan>> last) =>
        Enumerable.Range(0, last.Count).Select(i => (IReadOnlyList<RoutingPlan>)[.. earlier.Plans[i], .. last[i]]).ToArray();
}
