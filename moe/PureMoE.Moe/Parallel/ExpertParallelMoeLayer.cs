using System.Diagnostics;
using PureMoE.Moe.Dispatch;
using PureMoE.Moe.Experts;
using PureMoE.Moe.Routing;
using PureMoE.Nn;

namespace PureMoE.Moe.Parallel;

/// <summary>
/// One rank's part of an <see cref="ExpertParallelMoeLayer"/>: its replica of the gate W_r and the experts the
/// placement puts on it (its own copies, on its own device).
/// </summary>
public sealed class ExpertShard : Module
{
    internal ExpertShard(int rank, int[] globalExperts, Linear gate, SwiGluExperts experts)
    {
        Rank = rank;
        GlobalExperts = globalExperts;
        Gate = RegisterModule("gate", gate);
        Experts = RegisterModule("experts", experts);
    }

    /// <summary>The rank.</summary>
    public int Rank { get; }

    /// <summary>The global indices of the experts held here, ascending (local expert i is global GlobalExperts[i]).</summary>
    public IReadOnlyList<int> GlobalExperts { get; }

    /// <summary>This rank's replica of the router projection W_r [E, d].</summary>
    public Linear Gate { get; }

    /// <summary>The local experts, in <see cref="GlobalExperts"/> order.</summary>
    public SwiGluExperts Experts { get; }
}

/// <summary>
/// A Mixture-of-Experts layer spread over the P ranks of a <see cref="DeviceGroup"/> (expert parallelism, ROUTERS.md §5).
/// Built from a <see cref="MoeLayer"/>: every rank gets a copy of the gate, each expert lives (as a copy) only on the rank
/// the <see cref="ExpertPlacement"/> names. A step takes one token batch per rank:
/// <list type="number">
/// <item>route (one task per rank): rank r computes its logits and routes its own tokens with SourceDevice = r, so
/// capacity and Rectify's IR are decided per source device; it packs, for each destination q, the distinct tokens
/// with a kept pair on q's experts (once per device, not per expert) with their gate weights;</item>
/// <item>sizes: all ranks announce their counts (<see cref="TokenExchange.ExchangeSizes"/>);</item>
/// <item>dispatch + experts (one task per destination): q receives the payload, replicates each token to its local
/// experts (a local routing plan through the usual dispatch layout and grouped SwiGLU) and sums them per token;</item>
/// <item>combine (one task per source): r receives one vector per (token, device) and adds it into its output, in
/// device order, as soon as that device is done (overlapping with the other devices' expert compute).</item>
/// </list>
/// The backward mirrors it, one task per rank again, each phase starting on a rank as soon as the gradients it needs
/// have arrived (see <see cref="Forward"/>): one Backward reaches each rank's input, each gate replica (sum them with
/// <see cref="AllReduceGateGradients"/>) and each expert. The result equals the single-device layer routing the same
/// batches with the same SourceDevice and placement, and is bit-identical run to run and with
/// <see cref="TokenExchange.Concurrent"/> off (each rank's work is deterministic; cross-rank sums go in rank order).
/// </summary>
public sealed partial class ExpertParallelMoeLayer : Module
{
    private readonly ExpertShard[] _shards;
    private readonly int[] _localIndex;          // global expert → its index on its rank

    /// <summary>
    /// Shards <paramref name="source"/> over <paramref name="group"/> by <paramref name="placement"/> (default: the
    /// source's placement if it has P devices, else contiguous). Weights are copied; the source is not changed.
    /// </summary>
    public ExpertParallelMoeLayer(MoeLayer source, DeviceGroup group, ExpertPlacement? placement = null, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(group);
        int experts = source.Router.Experts, p = group.Count;
        placement ??= source.Placement.Devices == p ? source.Placement : ExpertPlacement.Contiguous(experts, p);
        if (placement.Devices != p)
            throw new ArgumentException($"ExpertParallelMoeLayer: placement {placement} is for {placement.Devices} devices, the group has {p}");
        if (placement.Experts != experts)
            throw new ArgumentException($"ExpertParallelMoeLayer: placement covers {placement.Experts} experts, the router {experts}");
        HiddenSize = source.HiddenSize;
        Router = source.Router;
        Placement = placement;
        Group = group;
        Exchange = new TokenExchange(group, timeout);
        var dtype = source.Gate.Weight.DType;
        int intermediate = source.Experts.List[0].W1.Weight.Shape[0];
        _localIndex = new int[experts];
        _shards = new ExpertShard[p];
        for (int r = 0; r < p; r++)
        {
            var device = group.DeviceOf(r);
            var local = placement.ExpertsOn(r);
            for (int i = 0; i < local.Length; i++) _localIndex[local[i]] = i;
            var rng = new Rng((ulong)r);
            var gate = new Linear(HiddenSize, experts, rng, bias: false, 0.02, dtype, device);
            var shardExperts = new SwiGluExperts(local.Length, HiddenSize, intermediate, rng, 0.02, dtype, device);
            _shards[r] = RegisterModule($"rank{r}", new ExpertShard(r, local, gate, shardExperts));
        }
        LoadFrom(source);
    }

    /// <summary>Model width d.</summary>
    public int HiddenSize { get; }

    /// <summary>The router (shared by the ranks; each routes its own tokens).</summary>
    public IRouter Router { get; }

    /// <summary>Where the experts live.</summary>
    public ExpertPlacement Placement { get; }

    /// <summary>The ranks.</summary>
    public DeviceGroup Group { get; }

    /// <summary>The all-to-all (its <see cref="TokenExchange.Timeout"/> bounds every wait of a step).</summary>
    public TokenExchange Exchange { get; }

    /// <summary>Number of ranks P.</summary>
    public int Devices => _shards.Length;

    /// <summary>Rank <paramref name="rank"/>'s gate replica and experts.</summary>
    public ExpertShard Shard(int rank) => _shards[rank];

    /// <summary>Global expert <paramref name="expert"/>, on the rank that holds it.</summary>
    public SwiGluMlp Expert(int expert) => _shards[Placement.DeviceOf(expert)].Experts.List[_localIndex[expert]];

    /// <summary>Each rank's plan of the last step.</summary>
    public IReadOnlyList<RoutingPlan>? LastPlans { get; private set; }

    /// <summary>What the last step moved (backward bytes are added when its backward runs).</summary>
    public ExchangeStats? LastStats { get; private set; }

    /// <summary>The sum over ranks of the routers' regularisers of the last step (on rank 0), or null.</summary>
    public Tensor? LastRegularizationLoss { get; private set; }

    /// <summary>Test hook: called on rank q just before its experts run (throwing simulates an expert failing).</summary>
    internal Action<int>? BeforeExperts { get; set; }

    /// <summary>Test hook: called on rank q just before its experts' backward runs.</summary>
    internal Action<int>? BeforeExpertsBackward { get; set; }

    /// <summary>Copies the gate (to every rank) and each expert (to its rank) from <paramref name="source"/>.</summary>
    public void LoadFrom(MoeLayer source)
    {
        using var _ = Tensor.NoGrad();
        for (int r = 0; r < Devices; r++)
        {
            var shard = _shards[r];
            shard.Gate.Weight.CopyFrom(Group.Place(source.Gate.Weight, r));
            for (int i = 0; i < shard.GlobalExperts.Count; i++)
            {
                var from = source.Experts.List[shard.GlobalExperts[i]];
                var to = shard.Experts.List[i];
                to.W1.Weight.CopyFrom(Group.Place(from.W1.Weight, r));
                to.W2.Weight.CopyFrom(Group.Place(from.W2.Weight, r));
                to.W3.Weight.CopyFrom(Group.Place(from.W3.Weight, r));
            }
        }
    }

    /// <summary>Copies the weights back into <paramref name="target"/> (gate from rank 0, each expert from its rank).</summary>
    public void CopyTo(MoeLayer target)
    {
        using var _ = Tensor.NoGrad();
        target.Gate.Weight.CopyFrom(_shards[0].Gate.Weight.To(target.Gate.Weight.Device).Clone());
        for (int e = 0; e < Placement.Experts; e++)
        {
            var from = Expert(e);
            var to = target.Experts.List[e];
            to.W1.Weight.CopyFrom(from.W1.Weight.To(to.W1.Weight.Device).Clone());
            to.W2.Weight.CopyFrom(from.W2.Weight.To(to.W2.Weight.Device).Clone());
            to.W3.Weight.CopyFrom(from.W3.Weight.To(to.W3.Weight.Device).Clone());
        }
    }

    /// <summary>
    /// Replaces every gate replica's gradient by the sum over ranks (an all-reduce in rank order, identical on every
    /// rank), so identical optimizer steps keep the replicas equal. Ranks without a gradient contribute zeros.
    /// </summary>
    public void AllReduceGateGradients()
    {
        var grads = _shards.Select(s => s.Gate.Weight.Grad ?? Tensor.ZerosLike(s.Gate.Weight)).ToArray();
        var sums = Group.AllReduceSum(grads);
        for (int r = 0; r < Devices; r++) _shards[r].Gate.Weight.Grad = sums[r];
    }

    /// <summary>
    /// One step over P token batches (batch r [..., d] on rank r's device; sizes may differ). Returns each rank's
    /// output, shaped like its input. Throws <see cref="DeviceFailureException"/> (naming the rank) if a rank fails,
    /// <see cref="ExchangeTimeoutException"/> if a phase exceeds the timeout, <see cref="OperationCanceledException"/>
    /// if <paramref name="cancellation"/> is cancelled; the layer stays usable for the next step in every case.
    /// <para>
    /// Backward: the outputs (and <see cref="LastRegularizationLoss"/>) hang off one node whose backward runs once every
    /// output's gradient is in, in three phases of one task per rank, each rank starting a phase as soon as its own
    /// inputs have arrived: combine backward on each source rank (its output gradient, at the tokens another rank
    /// computed, goes back to that rank), experts backward on each destination (through its local experts once every
    /// sender's gradient is in; the gradients of the received rows go back), route backward on each source (through
    /// its packing, router and gate replica into its input). The same failure, timeout and cancellation rules apply
    /// (the forward's token cancels it). Where the exchange overlaps compute: in the forward, each rank adds another
    /// rank's partial outputs as soon as that rank's experts finish, while others still compute; in the backward,
    /// a rank's experts backward starts as soon as its own senders' gradients are in, and a rank's route backward as
    /// soon as the ranks holding its tokens are done. Dispatch cannot overlap the experts of the same rank: a rank's
    /// grouped expert GEMM needs all its received rows (the sizes are known first, but the rows arrive as one batch).
    /// </para>
    /// </summary>
    public Tensor[] Forward(IReadOnlyList<Tensor> inputs, CancellationToken cancellation = default)
    {
        var step = RunStep(inputs, cancellation);
        if (!step.Record)
        {
            LastRegularizationLoss = step.RegularizationTotal;
            return step.Outputs;
        }

        // A hub node all outputs depend on: the engine calls each output's backward first (collecting its gradient)
        // and the hub's last, which runs the ranks' backward once with every gradient in hand.
        int p = Devices;
        var pending = new Tensor?[p];
        Tensor? pendingRegularizer = null;
        Tensor[] hubInputs = [.. inputs, .. Parameters()];
        var hub = Tensor.Function("ExpertParallel.Backward", Tensor.Zeros(new Shape(1), step.DType, Group.DeviceOf(0)), hubInputs, _ =>
        {
            var inputGrads = BackwardStep(step, pending, pendingRegularizer, cancellation);
            Array.Clear(pending);
            pendingRegularizer = null;
            return [.. inputGrads, .. new Tensor?[hubInputs.Length - p]];    // parameters got theirs directly
        });
        var outputs = new Tensor[p];
        for (int r = 0; r < p; r++)
        {
            int rank = r;
            outputs[r] = Tensor.Function("ExpertParallel.Output", step.Outputs[r].Detach(), [hub], g =>
            {
                pending[rank] = pending[rank] is { } earlier ? earlier.Add(g) : g;
                return [Tensor.ZerosLike(hub)];
            });
        }
        if (step.RegularizationTotal is { } total)
            LastRegularizationLoss = Tensor.Function("ExpertParallel.Regularizer", total, [hub], g =>
            {
                pendingRegularizer = pendingRegularizer is { } earlier ? earlier.Add(g) : g;
                return [Tensor.ZerosLike(hub)];
            });
        return outputs;
    }

    /// <summary>
    /// The forward phases of one step. With gradients on, each rank's part is recorded as its own graph between
    /// leaves cut at the copies (the step keeps both ends), for <see cref="BackwardStep"/> to run rank by rank.
    /// </summary>
    internal EpStep RunStep(IReadOnlyList<Tensor> inputs, CancellationToken cancellation)
    {
        int p = Devices, d = HiddenSize;
        if (inputs.Count != p) throw new ArgumentException($"ExpertParallelMoeLayer: {inputs.Count} input batches for {p} ranks");
        for (int r = 0; r < p; r++)
        {
            if (inputs[r].Shape[-1] != d)
                throw new ArgumentException($"ExpertParallelMoeLayer: rank {r}'s input {inputs[r].Shape} needs last dimension {d}");
            if (!inputs[r].Device.Equals(Group.DeviceOf(r)))
                throw new ArgumentException($"ExpertParallelMoeLayer: rank {r}'s input is on {inputs[r].Device}, the rank on {Group.DeviceOf(r)}");
        }
        var clock = Stopwatch.StartNew();
        var dtype = _shards[0].Gate.Weight.DType;
        bool training = IsTraining, record = PureMoE.Autograd.GradMode.IsEnabled;
        var step = new EpStep(p, dtype, record, new ExchangeStats(p, d, dtype.SizeInBytes()));
        var stats = step.Stats;

        // 1. Route and pack, on each source rank.
        var route = Exchange.RunOnRanks("route", r =>
        {
            using var _ = TokenExchange.GradScope(record);
            using var hold = Group.Hold(r);
            var leaf = inputs[r].Detach();             // rank r's graph starts here; its gradient goes back to the caller's
            if (record) leaf.RequiresGrad = true;
            step.InputLeaf[r] = leaf;
            return Task.FromResult(RouteAndPack(r, leaf, training, dtype, step));
        }, cancellation);
        Exchange.WaitAll(route, "route", cancellation);
        var packs = step.Packs = route.Select(t => t.Result).ToArray();

        // 2. Sizes first: each receiver learns how many rows each sender will send.
        step.ReceiveCounts = TokenExchange.ExchangeSizes(packs.Select(pk => pk.Counts).ToArray());
        for (int s = 0; s < p; s++)
            for (int q = 0; q < p; q++) stats.RecordTokens(s, q, packs[s].Counts[q]);

        // 3. Payload and experts, on each destination rank.
        var compute = Exchange.RunOnRanks("experts", q =>
        {
            using var _ = TokenExchange.GradScope(record);
            return Task.FromResult(ReceiveAndCompute(q, step, cancellation));
        }, cancellation);

        // 4. Combine, on each source rank, as each destination finishes.
        var combine = Exchange.RunOnRanks("combine", async r =>
        {
            var pack = packs[r];
            Tensor y;
            using (TokenExchange.GradScope(record))
            using (Group.Hold(r)) y = Tensor.Zeros(new Shape(pack.Tokens, d), dtype, Group.DeviceOf(r));
            for (int q = 0; q < p; q++)
            {
                if (pack.Counts[q] == 0) continue;
                var parts = await compute[q].WaitAsync(cancellation).ConfigureAwait(false);
                using var _ = TokenExchange.GradScope(record);           // no await inside: the scope is per thread
                var back = step.Returned[r][q] = Receive(parts[r]!, q, r, stats, ExchangeDirection.Combine, false, record, cancellation);
                using var hold = Group.Hold(r);
                y = y.IndexAdd(0, pack.TokenIndex[q]!, back);
            }
            using (TokenExchange.GradScope(record))
            using (Group.Hold(r)) return y.Reshape(inputs[r].Shape.ToArray());
        }, cancellation);
        Exchange.WaitAll([.. compute, .. combine], "dispatch/experts/combine", cancellation);
        step.Outputs = combine.Select(t => t.Result).ToArray();

        // The routers' regularisers, summed on rank 0 in rank order (their gradient reaches the ranks in BackwardStep).
        using (Tensor.NoGrad())
            for (int r = 0; r < p; r++)
                if (packs[r].Plan.RegularizationLoss is { } l)
                {
                    var onZero = Group.Copy(l, r, 0);
                    using var hold = Group.Hold(0);
                    step.RegularizationTotal = step.RegularizationTotal is { } sum ? sum.Add(onZero) : onZero;
                }

        stats.Elapsed = clock.Elapsed;
        LastPlans = packs.Select(pk => pk.Plan).ToArray();
        LastStats = stats;
        return step;
    }

    // A copy of payload (rank from) owned by rank to, cut from the sender's graph: a leaf of the receiver's graph whose
    // gradient BackwardStep sends back. Counted in the stats like any exchange copy.
    private Tensor Receive(Tensor payload, int from, int to, ExchangeStats stats, ExchangeDirection direction, bool metadata, bool record,
        CancellationToken cancellation)
    {
        Tensor moved;
        using (Tensor.NoGrad()) moved = Exchange.Send(payload, from, to, stats, direction, metadata, cancellation);
        var leaf = moved.Detach();
        if (record) leaf.RequiresGrad = true;
        return leaf;
    }

    internal sealed record Pack(int Tokens, RoutingPlan Plan, int[] Counts, Tensor?[] TokenIndex, Tensor?[] Rows, Tensor?[] Weights, int[]?[] LocalExperts);

    private Pack RouteAndPack(int r, Tensor x, bool training, DType dtype, EpStep step)
    {
        int p = Devices, d = HiddenSize;
        var device = Group.DeviceOf(r);
        int tokens = x.Numel / d;
        var flat = x.Reshape(tokens, d);
        var logits = _shards[r].Gate.Forward(flat);
        var plan = Router.Route(logits, new RoutingContext { Placement = Placement, SourceDevice = r, Training = training });
        plan.DebugValidate();

        int m = plan.SlotsPerToken;
        var tokenLists = Enumerable.Range(0, p).Select(_ => new List<long>()).ToArray();
        var idLists = Enumerable.Range(0, p).Select(_ => new List<int>()).ToArray();
        var maskLists = Enumerable.Range(0, p).Select(_ => new List<float>()).ToArray();
        var hit = new bool[p];
        for (int t = 0; t < tokens; t++)
        {
            Array.Clear(hit);
            for (int j = 0; j < m; j++)
            {
                int i = t * m + j;
                if (plan.IsKept(i)) hit[Placement.DeviceOf(plan.Expert[i])] = true;
            }
            for (int q = 0; q < p; q++)
            {
                if (!hit[q]) continue;
                tokenLists[q].Add(t);                 // once per destination device, however many of its experts
                for (int j = 0; j < m; j++)
                {
                    int i = t * m + j;
                    bool here = plan.IsKept(i) && Placement.DeviceOf(plan.Expert[i]) == q;
                    idLists[q].Add(here ? _localIndex[plan.Expert[i]] : -1);
                    maskLists[q].Add(here ? 1f : 0f);
                }
            }
        }

        var counts = tokenLists.Select(l => l.Count).ToArray();
        var index = new Tensor?[p];
        var rows = new Tensor?[p];
        var weights = new Tensor?[p];
        var ids = new int[]?[p];
        for (int q = 0; q < p; q++)
        {
            int n = counts[q];
            if (n == 0) continue;
            index[q] = Tensor.FromHost(tokenLists[q].ToArray(), [n], device);
            rows[q] = flat.IndexSelect(0, index[q]!);                                        // [n, d]
            // 0/1 as float32 (exact in any float type; float64 does not live on GPUs).
            var mask = Tensor.FromHost(maskLists[q].ToArray(), [n, m], device).To(dtype);
            weights[q] = plan.Weights.IndexSelect(0, index[q]!).Mul(mask);                   // [n, m], 0 off q
            ids[q] = idLists[q].ToArray();
        }
        if (step.Record) step.RecordRouteRoots(r, rows, weights, plan.RegularizationLoss, device);
        return new Pack(tokens, plan, counts, index, rows, weights, ids);
    }

    // Destination q: receive every sender's rows (sizes known), run the local experts, and slice the per-token sums
    // back into one buffer per sender.
    private Tensor?[] ReceiveAndCompute(int q, EpStep step, CancellationToken cancellation)
    {
        int p = Devices;
        var device = Group.DeviceOf(q);
        var receiveCounts = step.ReceiveCounts[q];
        var xs = new List<Tensor>();
        var ws = new List<Tensor>();
        var ids = new List<int>();
        for (int s = 0; s < p; s++)
        {
            if (receiveCounts[s] == 0) continue;
            var pack = step.Packs[s];
            xs.Add(step.ReceivedRows[q][s] = Receive(pack.Rows[q]!, s, q, step.Stats, ExchangeDirection.Dispatch, false, step.Record, cancellation));
            ws.Add(step.ReceivedWeights[q][s] = Receive(pack.Weights[q]!, s, q, step.Stats, ExchangeDirection.Dispatch, true, step.Record, cancellation));
            ids.AddRange(pack.LocalExperts[q]!);
            if (s != q) step.Stats.RecordMetadata((long)pack.LocalExperts[q]!.Length * sizeof(int));
        }
        var result = new Tensor?[p];
        int received = receiveCounts.Sum();
        if (received == 0) return result;
        cancellation.ThrowIfCancellationRequested();
        BeforeExperts?.Invoke(q);

        using var hold = Group.Hold(q);
        var x = xs.Count == 1 ? xs[0] : Tensor.Concat(xs, 0);                               // [N, d], sender order
        var w = ws.Count == 1 ? ws[0] : Tensor.Concat(ws, 0);                               // [N, m]
        int m = w.Shape[1];
        var shard = _shards[q];
        var plan = new RoutingPlan(received, shard.GlobalExperts.Count, m, ids.ToArray(), w);
        var layout = DispatchLayout.Build(plan, device);
        step.Stats.RecordRows(q, layout.Rows);
        var rows = layout.Gather(x);                                                        // replicated to local experts
        var expertOut = shard.Experts.Forward(rows, layout.GroupSizes);
        var combined = step.Combined[q] = layout.Combine(expertOut, w, received);           // [N, d]: one per (token, q)

        int offset = 0;
        for (int s = 0; s < p; s++)
        {
            if (receiveCounts[s] == 0) continue;
            result[s] = combined.Narrow(0, offset, receiveCounts[s]);
            offset += receiveCounts[s];
        }
        return result;
    }
}
