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

        // Rank r takes a contiguous share of the tokens, as leaves of the ranks' own graph.
        var sizes = Enumerable.Range(0, p).Select(r => tokens * (r + 1) / p - tokens * r / p).ToArray();
        bool record = GradMode.IsEnabled;
        var rankInputs = new Tensor[p];
        for (int r = 0, start = 0; r < p; start += sizes[r], r++)
        {
            rankInputs[r] = _ep.Group.Copy(flat.Narrow(0, start, sizes[r]).Detach(), 0, r);
            if (record) rankInputs[r].RequiresGrad = true;
        }
        var outputs = _ep.Forward(rankInputs, Cancellation);
        LastStats = Merge(_ep.LastPlans!);

        Tensor y, reg;
        using (GradMode.NoGrad())
            y = Tensor.Concat(outputs.Select(o => o.Detach().To(x.Device)).ToArray(), 0);
        var parameters = Parameters().ToArray();
        Tensor[] inputs = [flat, .. parameters];
        y = Tensor.Function("ExpertParallelMoe", y, inputs, g =>
        {
            var parts = g.Split(sizes, 0);
            return RankBackward(rankInputs, r =>
            {
                if (outputs[r].RequiresGrad) outputs[r].Backward(_ep.Group.Copy(parts[r].Contiguous(), 0, r));
            });
        });
        LastRegularizationLoss = null;
        if (_ep.LastRegularizationLoss is Tensor rankReg)
        {
            using (GradMode.NoGrad()) reg = rankReg.Detach().To(x.Device).Clone();
            LastRegularizationLoss = Tensor.Function("ExpertParallelRegularizer", reg, inputs, g =>
                RankBackward(rankInputs, _ => { }, () => rankReg.Backward(g.To(rankReg.Device))));
        }
        return y.Reshape(shape);
    }

    // Runs a backward through the ranks' graph (fresh gradients), then maps the ranks' gradients back: input rows
    // from every rank, the gate summed over ranks, each expert from the rank that holds it.
    private Tensor?[] RankBackward(Tensor[] rankInputs, Action<int> perRank, Action? once = null)
    {
        foreach (var t in rankInputs) t.ZeroGrad();
        foreach (var t in _ep.Parameters()) t.ZeroGrad();
        for (int r = 0; r < rankInputs.Length; r++) perRank(r);
        once?.Invoke();
        _ep.AllReduceGateGradients();
        var device = Inner.Gate.Weight.Device;
        var dx = Tensor.Concat(rankInputs.Select(t => (t.Grad ?? Tensor.ZerosLike(t)).To(device)).ToArray(), 0);
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
