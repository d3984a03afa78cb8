using PureMoE.Models;
using PureMoE.Moe;
using PureMoE.Moe.Models;

namespace PureMoE.Cli;

/// <summary>The numbers a training step reports, read from the device once.</summary>
public static class StepValues
{
    /// <summary>
    /// The step's loss and each layer's routing statistics. On a host device the statistics are complete already.
    /// On an ILGPU device <see cref="RoutingStats.From"/> leaves the regulariser values (aux, z, sparsity) NaN so
    /// routing reads nothing extra; here they travel with the loss in one device→host read (the step's only read
    /// besides each MoE layer's routing decision) and are filled in.
    /// </summary>
    public static (double Loss, IReadOnlyList<RoutingStats?> Stats) Read(Tensor loss, MixtralForCausalLM model)
    {
        ArgumentNullException.ThrowIfNull(loss);
        ArgumentNullException.ThrowIfNull(model);
        var stats = MoeMixtral.LastStats(model);
        if (loss.Device.IsHost) return (loss.Item(), stats);

        var plans = MoeMixtral.LastPlans(model);
        var parts = new List<Tensor> { loss.Reshape(1) };
        var where = new List<(int Layer, int Which)>();
        for (int i = 0; i < plans.Count; i++)
        {
            if (plans[i].Count != 1 || stats[i] is null) continue;
            Tensor?[] values = [plans[i][0].AuxLoss, plans[i][0].ZLoss, plans[i][0].SparsityLoss];
            for (int w = 0; w < values.Length; w++)
                if (values[w] is Tensor t) { parts.Add(t.Reshape(1)); where.Add((i, w)); }
        }
        float[] read;
        using (Tensor.NoGrad()) read = Tensor.Concat(parts.Select(p => p.To(DType.Float32)).ToArray(), 0).ToFloatArray();

        var filled = stats.ToArray();
        for (int j = 0; j < where.Count; j++)
        {
            var (layer, which) = where[j];
            double v = read[j + 1];
            filled[layer] = which switch
            {
                0 => filled[layer]! with { AuxLoss = v },
                1 => filled[layer]! with { ZLoss = v },
                _ => filled[layer]! with { SparsityLoss = v },
            };
        }
        return (read[0], filled);
    }
}
