using FsCheck.Xunit;
using PureMoE.Moe.Parallel;

namespace PureMoE.Moe.Tests.ExpertParallel;

/// <summary>
/// ROUTERS.md §6.7: the P-device layer equals the 1-device layer. The reference is one <see cref="MoeLayer"/> with the
/// same weights and placement routing each rank's batch with SourceDevice = rank (so capacity and IR decide alike);
/// outputs and every gradient (each rank's input, the gate — replicas all-reduced — and every expert weight) agree to
/// 1e-6 relative. Also: bytes moved equal the formula exactly each way (and twice over in backward), and tokens are
/// conserved.
/// </summary>
public class ExpertParallelEquivalenceTests
{
    internal sealed record Run(Tensor[] Outputs, Tensor[] InputGrads, Tensor GateGrad, Tensor[] ExpertGrads, ExchangeStats? Stats,
        IReadOnlyList<Moe.Routing.RoutingPlan> Plans);

    internal static MoeLayer Reference(EpCase c, ExpertPlacement placement) =>
        new(c.Hidden, c.Intermediate, c.MakeRouter(), new Rng(c.Seed), 0.5, DType.Float64, placement: placement);

    private static Tensor Loss(IReadOnlyList<Tensor> ys, Tensor? reg, ulong seed)
    {
        Tensor? total = reg;
        for (int r = 0; r < ys.Count; r++)
        {
            var weights = Tensor.Randn(ys[r].Shape, new Rng(seed * 7 + (ulong)r), dtype: DType.Float64);
            var term = ys[r].Mul(weights).Sum();
            total = total is null ? term : total.Add(term);
        }
        return total!;
    }

    internal static Run RunReference(EpCase c, MoeLayer layer)
    {
        var xs = c.MakeInputs();
        layer.ZeroGrad();
        var ys = new Tensor[c.Devices];
        var plans = new Moe.Routing.RoutingPlan[c.Devices];
        Tensor? reg = null;
        for (int r = 0; r < c.Devices; r++)
        {
            layer.SourceDevice = r;
            ys[r] = layer.Forward(xs[r]);
            plans[r] = layer.LastPlan!;
            if (layer.LastRegularizationLoss is { } l) reg = reg is null ? l : reg.Add(l);
        }
        Loss(ys, reg, c.Seed).Backward();
        return new Run(ys, xs.Select(x => x.Grad!).ToArray(), layer.Gate.Weight.Grad!,
            ExpertGrads(e => layer.Experts.List[e], c.Experts), null, plans);
    }

    internal static Run RunParallel(EpCase c, ExpertParallelMoeLayer ep)
    {
        var xs = c.MakeInputs();
        ep.ZeroGrad();
        var ys = ep.Forward(xs, TestContext.Current.CancellationToken);
        Loss(ys, ep.LastRegularizationLoss, c.Seed).Backward();
        ep.AllReduceGateGradients();
        for (int r = 1; r < c.Devices; r++)
            Assert.Equal(ep.Shard(0).Gate.Weight.Grad!.ToDoubleArray(), ep.Shard(r).Gate.Weight.Grad!.ToDoubleArray());
        return new Run(ys, xs.Select(x => x.Grad!).ToArray(), ep.Shard(0).Gate.Weight.Grad!,
            ExpertGrads(ep.Expert, c.Experts), ep.LastStats, ep.LastPlans!);
    }

    private static Tensor[] ExpertGrads(Func<int, PureMoE.Nn.SwiGluMlp> expert, int experts) =>
        Enumerable.Range(0, experts).SelectMany(e =>
        {
            var x = expert(e);
            return new[] { x.W1.Weight, x.W2.Weight, x.W3.Weight }
                .Select(w => w.Grad ?? Tensor.ZerosLike(w));
        }).ToArray();

    internal static void AssertClose(string what, Tensor expected, Tensor actual)
    {
        Assert.Equal(expected.Shape, actual.Shape);
        double[] a = expected.ToDoubleArray(), b = actual.ToDoubleArray();
        double scale = a.Length == 0 ? 0 : a.Max(Math.Abs);
        for (int i = 0; i < a.Length; i++)
        {
            double tol = 1e-6 * Math.Max(Math.Abs(a[i]), Math.Max(1e-6 * scale, 1e-300));
            if (!(Math.Abs(a[i] - b[i]) <= tol))
                throw new Xunit.Sdk.XunitException($"{what}[{i}]: 1-device {a[i]:G17}, P-device {b[i]:G17} (tolerance {tol:E2})");
        }
    }

    internal static void CheckCase(EpCase c)
    {
        var placement = c.MakePlacement();
        var layer = Reference(c, placement);
        var ep = new ExpertParallelMoeLayer(layer, DeviceGroup.LogicalCpu(c.Devices), placement);
        var expected = RunReference(c, layer);
        var actual = RunParallel(c, ep);
        for (int r = 0; r < c.Devices; r++)
        {
            AssertClose($"{c} output of rank {r}", expected.Outputs[r], actual.Outputs[r]);
            AssertClose($"{c} input gradient of rank {r}", expected.InputGrads[r], actual.InputGrads[r]);
        }
        AssertClose($"{c} gate gradient", expected.GateGrad, actual.GateGrad);
        for (int i = 0; i < expected.ExpertGrads.Length; i++)
            AssertClose($"{c} expert {i / 3} w{new[] { 1, 2, 3 }[i % 3]} gradient", expected.ExpertGrads[i], actual.ExpertGrads[i]);

        // Bytes moved = Σ_t |devices(t) \ {source(t)}| · d · 8, each way; backward moves the same again both ways.
        var stats = actual.Stats!;
        long formula = ExchangeStats.FormulaBytes(actual.Plans, placement, c.Hidden, sizeof(double));
        Assert.Equal(formula, stats.DispatchBytes);
        Assert.Equal(formula, stats.CombineBytes);
        Assert.Equal(2 * formula, stats.BackwardBytes);
        Assert.Equal(formula, ExchangeStats.FormulaBytes(expected.Plans, placement, c.Hidden, sizeof(double)));
        CheckConservation(stats);
    }

    internal static void CheckConservation(ExchangeStats stats)
    {
        int p = stats.Devices;
        Assert.Equal(stats.TokensSent.Sum(), stats.TokensReceived.Sum());
        Assert.Equal(stats.DispatchBytesSent.Sum(), stats.DispatchBytesReceived.Sum());
        Assert.Equal(stats.CombineBytesSent.Sum(), stats.CombineBytesReceived.Sum());
        Assert.Equal(stats.BackwardBytesSent.Sum(), stats.BackwardBytesReceived.Sum());
        for (int r = 0; r < p; r++)
        {
            // What r sent is the off-diagonal of its row; what it received, of its column; combine mirrors dispatch.
            Assert.Equal(Enumerable.Range(0, p).Where(q => q != r).Sum(q => stats.TokenMatrix[r * p + q]), stats.TokensSent[r]);
            Assert.Equal(Enumerable.Range(0, p).Where(s => s != r).Sum(s => stats.TokenMatrix[s * p + r]), stats.TokensReceived[r]);
            Assert.Equal(stats.TokensSent[r] * stats.HiddenSize * stats.BytesPerElement, stats.DispatchBytesSent[r]);
            Assert.Equal(stats.DispatchBytesSent[r], stats.CombineBytesReceived[r]);
            Assert.Equal(stats.DispatchBytesReceived[r], stats.CombineBytesSent[r]);
        }
        Assert.True(stats.LoadImbalance >= 1.0);
    }

    public static TheoryData<int, string, bool> AllDevicesAndRouters()
    {
        var data = new TheoryData<int, string, bool>();
        foreach (int p in new[] { 1, 2, 4, 8 })
            foreach (var router in EpCase.Routers)
                data.Add(p, router, p > 1);
        return data;
    }

    [Theory]
    [MemberData(nameof(AllDevicesAndRouters))]
    public void EqualsSingleDeviceLayer(int devices, string router, bool randomPlacement)
    {
        ulong seed = (ulong)(devices * 100 + Array.IndexOf(EpCase.Routers, router));
        CheckCase(new EpCase(devices, 2 * Math.Max(devices, 2), router, randomPlacement, 5, 6, EpCase.TokenCounts(devices, seed), seed));
    }

    [Property(Arbitrary = [typeof(EpArbitraries)], MaxTest = 150)]
    public void EqualsSingleDeviceLayerForAnyCase(EpCase c) => CheckCase(c);

    [Fact]
    public void FloatLayerMovesFourBytesPerElementAndKeepsShapes()
    {
        var router = new Moe.Routing.TopKRouter(8, new Moe.Routing.TopKOptions { K = 2 });
        var layer = new MoeLayer(6, 8, router, new Rng(5), 0.3);
        var ep = new ExpertParallelMoeLayer(layer, DeviceGroup.LogicalCpu(4));
        var xs = Enumerable.Range(0, 4).Select(r => Tensor.Randn(new Shape(2, 3, 6), new Rng((ulong)r))).ToArray();
        var ys = ep.Forward(xs, TestContext.Current.CancellationToken);
        layer.Placement = ep.Placement;
        for (int r = 0; r < 4; r++)
        {
            Assert.Equal(xs[r].Shape, ys[r].Shape);
            layer.SourceDevice = r;
            double[] reference = layer.Forward(xs[r]).ToDoubleArray(), actual = ys[r].ToDoubleArray();
            for (int i = 0; i < reference.Length; i++) Assert.True(Math.Abs(reference[i] - actual[i]) <= 1e-5 * Math.Max(1, Math.Abs(reference[i])));
        }
        Assert.Equal(ExchangeStats.FormulaBytes(ep.LastPlans!, ep.Placement, 6, 4), ep.LastStats!.DispatchBytes);
        Assert.Equal(2L * 4 * 3, ep.LastStats.SizeMessages);
    }
}
