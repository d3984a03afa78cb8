using PureMoE.Autograd;
using PureMoE.Models;
using PureMoE.Moe.Routing;
using PureMoE.Nn;

namespace PureMoE.Moe.Parallel;

/// <summary>
/// A model's MoE sub-layer run expert-parallel over P devices. The parameters stay those of the wrapped
/// <see cref="MoeLayer"/> (same Hugging Face names: gate.weight, experts.{e}.w1.weight, ...), so checkpoints,
/// optimizers and the rest of the model see one ordinary layer. Each forward copies the weights to the ranks
/// (gate to every rank, each expert to its own), splits the tokens into P contiguous rank batches, and runs the
/// <see cref="ExpertParallelMoeLayer"/> (per-rank routing, token exchange, experts, combine). Its backward runs the
/// ranks' graph and returns the gradients to the wrapped layer's parameters: the gate's summed over ranks, each
/// expert's from its rank, the input's from every rank's batch.
/// </summary>
public sealed class ExpertParallelBlock : Module, IMoeBlock
{
    private readonly ExpertParallelMoeLayer _ep;

    /// <summary>Wraps <paramref name="inner"/> to run on <paramref name="group"/> with <paramref name="placement"/> (contiguous by default).</summary>
    public ExpertParallelBlock(MoeLayer inner, DeviceGroup group, ExpertPlacement? placement = null, TimeSpan? timeout = null)
    {
        Inner = inner;
        RegisterModule("gate", inner.Gate);
        RegisterModule("experts", inner.Experts);
        placement ??= ExpertPlacement.Contiguous(inner.Router.Experts, group.Count);
        inner.Placement = placement;
        _ep = new ExpertParallelMoeLayer(inner, group, placement, timeout);
    }

    /// <summary>The wrapped single-device layer: the parameters, the router, the placement.</summary>
    public MoeLayer Inner { get; }

    /// <summary>The expert-parallel layer that runs the steps.</summary>
    public ExpertParallelMoeLayer Parallel => _ep;

    /// <summary>Cancels the exchange of the current and later steps when triggered (e.g. Ctrl-C).</summary>
    public CancellationToken Cancellation { get; set; }

    /// <summary>The router's regularisers summed over ranks, differentiable into the wrapped gate and the input.</summary>
    public Tensor? LastRegularizationLoss { get; private set; }

    /// <summary>Routing statistics of the last step, merged over ranks.</summary>
    public RoutingStats? LastStats { get; private set; }

    /// <summary>What the last step moved between devices.</summary>
    public ExchangeStats? LastExchange => _ep.LastStats;

    /// <summary>The ranks' plans of the last step.</summary>
    public IReadOnlyList<RoutingPlan>? LastPlans => _ep.LastPlans;

    /// <summary>x [..., d] → the same shape.</summary>
    public Tensor Forward(Tensor x)
    {
        int d = Inner.HiddenSize, p = _ep.Devices;
        if (x.Shape[-1] != d) throw new ArgumentException($"ExpertParallelBlock: input {x.Shape} needs last dimension {d}");
        var shape = x.Shape.ToArray();
        int tokens = x.Numel / d;
        var flat = x.Reshape(tokens, d);
        _ep.Train(IsTraining);
        _ep.LoadFrom(Inner);

        // Rank r takes a contiguous share of the tokens, copied onto its device.
        var sizes = Enumerable.Range(0, p).Select(r => tokens * (r + 1) / p - tokens * r / p).ToArray();
        var rankInputs = new Tensor[p];
        for (int r = 0, start = 0; r < p; start += sizes[r], r++)
            rankInputs[r] = _ep.Group.Place(flat.Narrow(0, start, sizes[r]), r);
        var step = _ep.RunStep(rankInputs, Cancellation);
        LastStats = Merge(_ep.LastPlans!);

        Tensor y, reg;
        using (GradMode.NoGrad())
            y = Tensor.Concat(step.Outputs.Select(o => o.Detach().To(x.Device)).ToArray(), 0);
        var parameters = Parameters().ToArray();
        Tensor[] inputs = [flat, .. parameters];
        y = Tensor.Function("ExpertParallelMoe", y, inputs, g =>
        {
            var parts = g.Split(sizes, 0);
            return RankBackward(step, sizes, Enumerable.Range(0, p).Select(r => (Tensor?)_ep.Group.Place(parts[r], r)).ToArray(), null);
        });
        LastRegularizationLoss = null;
        if (step.RegularizationTotal is Tensor rankReg)
        {
            using (GradMode.NoGrad()) reg = rankReg.To(x.Device).Clone();
            LastRegularizationLoss = Tensor.Function("ExpertParallelRegularizer", reg, inputs, g =>
                RankBackward(step, sizes, null, _ep.Group.Place(g, 0)));
        }
        return y.Reshape(shape);
    }

    // Runs the ranks' backward (fresh gradients), then maps the ranks' gradients back: input rows from every rank,
    // the gate summed over ranks, each expert from the rank that holds it.
    private Tensor?[] RankBackward(ExpertParallelMoeLayer.EpStep step, int[] sizes, Tensor?[]? outputGrads, Tensor? regularizerGrad)
    {
        foreach (var t in _ep.Parameters()) t.ZeroGrad();
        var inputGrads = _ep.BackwardStep(step, outputGrads, regularizerGrad, Cancellation);
        _ep.AllReduceGateGradients();
        var device = Inner.Gate.Weight.Device;
        int d = Inner.HiddenSize;
        var dx = Tensor.Concat(inputGrads.Select((g, r) =>
            g?.To(device) ?? Tensor.Zeros(new Shape(sizes[r], d), step.DType, device)).ToArray(), 0);
        var grads = new List<Tensor?> { dx, _ep.Shard(0).Gate.Weight.Grad?.To(device) };
        for (int e = 0; e < Inner.Experts.Count; e++)
        {
            var expert = _ep.Expert(e);
            grads.Add(expert.W1.Weight.Grad?.To(device));
            grads.Add(expert.W2.Weight.Grad?.To(device));
            grads.Add(expert.W3.Weight.Grad?.To(device));
        }
        return [.. grads];
    }

    // Parameters() order is gate.weight, then experts.{e}.w1, w2, w3 — the order RankBackward returns.
    private static RoutingStats Merge(IReadOnlyList<RoutingPlan> plans) => RoutingStats.Merge(plans.Select(RoutingStats.From).ToArray());
}
