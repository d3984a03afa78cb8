namespace PureMoE.Moe.Parallel;

public sealed partial class ExpertParallelMoeLayer
{
    /// <summary>
    /// One step's per-rank graphs, kept for the backward. With gradients on, the forward records three graphs per
    /// rank, cut at every copy between ranks (a received tensor is a fresh leaf), so each can run backward on its own
    /// rank: route (input leaf → rows and weights sent, regulariser), experts (received leaves → combined sums) and
    /// combine (returned leaves → output).
    /// </summary>
    internal sealed class EpStep
    {
        public EpStep(int devices, DType dtype, bool record, ExchangeStats stats)
        {
            DType = dtype;
            Record = record;
            Stats = stats;
            InputLeaf = new Tensor[devices];
            Packs = [];
            ReceiveCounts = [];
            ReceivedRows = NewGrid(devices);
            ReceivedWeights = NewGrid(devices);
            Combined = new Tensor?[devices];
            Returned = NewGrid(devices);
            Outputs = [];
            RouteRoots = new Tensor?[devices];
            RouteRootGrads = new Tensor?[]?[devices];
        }

        private static Tensor?[][] NewGrid(int p) => Enumerable.Range(0, p).Select(_ => new Tensor?[p]).ToArray();

        public DType DType { get; }
        public bool Record { get; }
        public ExchangeStats Stats { get; }
        public Tensor[] InputLeaf { get; }                 // [r] rank r's input, cut from the caller's graph
        public Pack[] Packs { get; set; }                  // [s] what source s routed and sent
        public int[][] ReceiveCounts { get; set; }         // [q][s] rows q received from s
        public Tensor?[][] ReceivedRows { get; }           // [q][s] leaves of q's experts graph
        public Tensor?[][] ReceivedWeights { get; }        // [q][s]
        public Tensor?[] Combined { get; }                 // [q] q's per-token expert sums [N_q, d] (root of its experts graph)
        public Tensor?[][] Returned { get; }               // [r][q] leaves of r's combine graph: q's partial outputs
        public Tensor[] Outputs { get; set; }              // [r] root of r's combine graph, shaped like its input
        public Tensor? RegularizationTotal { get; set; }   // Σ over ranks on rank 0, not recorded
        public Tensor?[] RouteRoots { get; }               // [s] one node over all roots of s's route graph
        public Tensor?[]?[] RouteRootGrads { get; }        // [s] their gradients, set just before that node's backward

        /// <summary>
        /// Ties the roots of rank s's route graph (rows and weights sent to each rank, the regulariser) to one scalar
        /// node whose backward hands each root the gradient stored in <see cref="RouteRootGrads"/>, so the graph runs
        /// backward once however many ranks its tokens went to.
        /// </summary>
        public void RecordRouteRoots(int s, Tensor?[] rows, Tensor?[] weights, Tensor? regularizer, Device device)
        {
            Tensor[] roots = [.. rows.Where(t => t is not null)!, .. weights.Where(t => t is not null)!, .. regularizer is null ? [] : new[] { regularizer }];
            RouteRoots[s] = Tensor.Function("ExpertParallel.RouteRoots", Tensor.Zeros(new Shape(1), DType, device), roots,
                _ => RouteRootGrads[s] ?? new Tensor?[roots.Length]);
        }
    }

    /// <summary>
    /// The backward of <paramref name="step"/> given each rank's output gradient (null: none) and the regulariser's
    /// (on rank 0; null: none), one task per rank in three phases (see <see cref="Forward"/>). Expert weights and gate
    /// replicas accumulate their gradients; returns each rank's input gradient (on its device; null where none).
    /// </summary>
    internal Tensor?[] BackwardStep(EpStep step, IReadOnlyList<Tensor?>? outputGrads, Tensor? regularizerGrad, CancellationToken cancellation)
    {
        if (!step.Record) throw new InvalidOperationException("ExpertParallelMoeLayer: the step ran without gradients; it has no backward");
        int p = Devices, d = HiddenSize;
        var stats = step.Stats;

        // 1. Combine backward, on each source rank r: the gradient of the partial output q returned goes back to q.
        var combineBack = Exchange.RunOnRanks("combine backward", r =>
        {
            var toSend = new Tensor?[p];
            var returned = step.Returned[r];
            if (outputGrads?[r] is not { } g || !step.Outputs[r].RequiresGrad) return Task.FromResult(toSend);
            using (Group.Hold(r))
            {
                foreach (var leaf in returned) leaf?.ZeroGrad();
                step.Outputs[r].Backward(g);
            }
            for (int q = 0; q < p; q++)
                if (returned[q]?.Grad is { } grad) toSend[q] = SendBack(grad, r, q, stats, metadata: false, cancellation);
            return Task.FromResult(toSend);
        }, cancellation);

        // 2. Experts backward, on each destination q, once every sender's gradient is in: through the local experts;
        //    the gradients of the received rows and weights go back to their senders.
        var expertsBack = Exchange.RunOnRanks("experts backward", async q =>
        {
            var toSend = new (Tensor? Rows, Tensor? Weights)[p];
            var counts = step.ReceiveCounts[q];
            if (step.Combined[q] is not { RequiresGrad: true } combined) return toSend;
            var parts = new Tensor?[p];
            for (int s = 0; s < p; s++)
                if (counts[s] > 0) parts[s] = (await combineBack[s].WaitAsync(cancellation).ConfigureAwait(false))[q];
            if (parts.All(t => t is null)) return toSend;
            cancellation.ThrowIfCancellationRequested();
            BeforeExpertsBackward?.Invoke(q);
            using (Tensor.NoGrad())
            using (Group.Hold(q))
            {
                // Sender order, as the forward concatenated them; a sender whose output had no gradient contributes zeros.
                var slices = Enumerable.Range(0, p).Where(s => counts[s] > 0)
                    .Select(s => parts[s] ?? Tensor.Zeros(new Shape(counts[s], d), step.DType, Group.DeviceOf(q))).ToArray();
                var grad = slices.Length == 1 ? slices[0] : Tensor.Concat(slices, 0);
                foreach (var leaf in step.ReceivedRows[q].Concat(step.ReceivedWeights[q])) leaf?.ZeroGrad();
                combined.Backward(grad);
            }
            for (int s = 0; s < p; s++)
            {
                if (counts[s] == 0) continue;
                if (step.ReceivedRows[q][s]!.Grad is { } dx) toSend[s].Rows = SendBack(dx, q, s, stats, metadata: false, cancellation);
                if (step.ReceivedWeights[q][s]!.Grad is { } dw) toSend[s].Weights = SendBack(dw, q, s, stats, metadata: true, cancellation);
            }
            return toSend;
        }, cancellation);

        // 3. Route backward, on each source s, once the ranks holding its tokens are done: through its packing, router
        //    and gate replica into its input, in one pass over all the gradients that came back.
        var routeBack = Exchange.RunOnRanks("route backward", async s =>
        {
            var pack = step.Packs[s];
            var rows = new List<Tensor?>();
            var weights = new List<Tensor?>();
            for (int q = 0; q < p; q++)
            {
                if (pack.Counts[q] == 0) continue;
                var (dx, dw) = (await expertsBack[q].WaitAsync(cancellation).ConfigureAwait(false))[s];
                rows.Add(dx);
                weights.Add(dw);
            }
            var regularizer = pack.Plan.RegularizationLoss;
            Tensor? dr = regularizerGrad is not null && regularizer is not null ? Group.Copy(regularizerGrad, 0, s) : null;
            Tensor?[] grads = [.. rows, .. weights, .. regularizer is null ? [] : new[] { dr }];
            var input = step.InputLeaf[s];
            if (grads.All(t => t is null) || step.RouteRoots[s] is not { RequiresGrad: true } root) return (Tensor?)null;
            using (Group.Hold(s))
            {
                input.ZeroGrad();
                step.RouteRootGrads[s] = grads;
                root.Backward();
                step.RouteRootGrads[s] = null;
            }
            return input.Grad;
        }, cancellation);

        Exchange.WaitAll([.. combineBack, .. expertsBack, .. routeBack], "backward", cancellation);
        return routeBack.Select(t => t.Result).ToArray();
    }

    private Tensor SendBack(Tensor gradient, int from, int to, ExchangeStats stats, bool metadata, CancellationToken cancellation)
    {
        using var _ = Tensor.NoGrad();
        return Exchange.Send(gradient, from, to, stats, ExchangeDirection.Backward, metadata, cancellation);
    }
}
