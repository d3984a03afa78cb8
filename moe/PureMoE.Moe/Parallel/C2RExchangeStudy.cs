using PureMoE.Moe.Routing;
using PureMoE.Optim;

namespace PureMoE.Moe.Parallel;

/// <summary>What <see cref="C2RExchangeStudy.Run"/> measured: bytes each way for the same evaluation tokens.</summary>
/// <param name="TopKContiguousBytes">TopK (k = 2) with the contiguous placement: dispatch bytes (= combine bytes).</param>
/// <param name="C2RCoLocatedBytes">C2R (T = E/P − 1) over the co-located lists and placement: dispatch bytes.</param>
/// <param name="Placement">The co-located placement.</param>
/// <param name="TrainLossFirst">Training loss of the first step.</param>
/// <param name="TrainLossLast">Training loss of the last step.</param>
/// <param name="EvalTokens">Evaluation tokens (over all ranks).</param>
public sealed record C2RExchangeResult(long TopKContiguousBytes, long C2RCoLocatedBytes, ExpertPlacement Placement,
    double TrainLossFirst, double TrainLossLast, int EvalTokens)
{
    /// <summary>1 − C2R / TopK: the fraction of bytes C2R saves.</summary>
    public double Reduction => TopKContiguousBytes == 0 ? 0 : 1.0 - (double)C2RCoLocatedBytes / TopKContiguousBytes;
}

/// <summary>
/// The C2R claim of ROUTERS.md §4–5 on a small model: train one MoE layer briefly with TopK (k = 2) on structured
/// synthetic data (tokens from a few clusters, each with its own target map), profile its collaboration, build the
/// co-located placement (<see cref="CollaborationProfile.CoLocate"/>) and C2R with T = E/P − 1 over the reordered
/// lists, and count the bytes the P-rank exchange moves for the same evaluation tokens: TopK with the contiguous
/// placement versus C2R with the co-located one.
/// </summary>
public static class C2RExchangeStudy
{
    /// <summary>Runs the study (defaults: E = 8, P = 4, d = 16, ff = 32, 200 steps of 64 tokens, 4 × 256 eval tokens).</summary>
    public static C2RExchangeResult Run(ulong seed = 1, int experts = 8, int devices = 4, int hidden = 16, int intermediate = 32,
        int steps = 200, int batch = 64, int evalTokensPerRank = 256, int clusters = 6)
    {
        var rng = new Rng(seed);
        var centers = Tensor.Randn(new Shape(clusters, hidden), rng).MulScalar(2.0);
        var maps = Enumerable.Range(0, clusters).Select(_ => Tensor.Randn(new Shape(hidden, hidden), rng).MulScalar(1.0 / Math.Sqrt(hidden))).ToArray();
        (Tensor X, Tensor Y) Sample(int n, Rng r)
        {
            var xs = new List<Tensor>();
            var ys = new List<Tensor>();
            for (int i = 0; i < n; i++)
            {
                int c = r.NextInt(clusters);
                var x = centers.Narrow(0, c, 1).Add(Tensor.Randn(new Shape(1, hidden), r).MulScalar(0.5));
                xs.Add(x);
                ys.Add(x.MatMul(maps[c]).Tanh());
            }
            return (Tensor.Concat(xs, 0), Tensor.Concat(ys, 0));
        }

        var topk = new TopKRouter(experts, new TopKOptions { K = 2, AuxLossCoeff = 0.01 });
        var layer = new MoeLayer(hidden, intermediate, topk, rng, 0.1);
        var optimizer = new AdamW(layer.Parameters(), lr: 3e-3, weightDecay: 0);
        double first = double.NaN, last = double.NaN;
        var dataRng = new Rng(seed + 1);
        for (int step = 0; step < steps; step++)
        {
            var (x, y) = Sample(batch, dataRng);
            var diff = layer.Forward(x).Sub(y);
            var loss = diff.Mul(diff).Sum().MulScalar(1.0 / diff.Numel);
            if (layer.LastRegularizationLoss is { } reg) loss = loss.Add(reg);
            optimizer.ZeroGrad();
            loss.Backward();
            optimizer.Step();
            double value = loss.Item();
            if (step == 0) first = value;
            last = value;
        }

        // Profile on fresh tokens, then evaluate both configurations on the same per-rank batches.
        layer.Eval();
        var profiler = new CollaborationProfiler(1, experts);
        using (Tensor.NoGrad())
        {
            for (int i = 0; i < 8; i++)
            {
                layer.Forward(Sample(batch, dataRng).X);
                profiler.Record(0, layer.LastPlan!);
            }
        }
        var (placement, profile) = profiler.Profile(0).CoLocate(devices);
        var c2r = new C2RRouter(profile, new C2ROptions { K = 2, Candidates = experts / devices - 1 });
        var evalRng = new Rng(seed + 2);
        var batches = Enumerable.Range(0, devices).Select(_ => Sample(evalTokensPerRank, evalRng).X).ToArray();

        long Bytes(IRouter router, ExpertPlacement where)
        {
            layer.Router = router;
            var ep = new ExpertParallelMoeLayer(layer, DeviceGroup.LogicalCpu(devices), where);
            ep.Eval();
            using var _ = Tensor.NoGrad();
            ep.Forward(batches);
            return ep.LastStats!.DispatchBytes;
        }
        long topkBytes = Bytes(topk, ExpertPlacement.Contiguous(experts, devices));
        long c2rBytes = Bytes(c2r, placement);
        layer.Router = topk;
        return new C2RExchangeResult(topkBytes, c2rBytes, placement, first, last, devices * evalTokensPerRank);
    }
}
