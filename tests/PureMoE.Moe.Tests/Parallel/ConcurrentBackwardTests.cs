using PureMoE.Moe.Parallel;

namespace PureMoE.Moe.Tests.ExpertParallel;

/// <summary>
/// The backward runs one task per rank: its gradients still equal the 1-device layer's (the equivalence tests), and
/// they are bit-identical run to run and to the same step run with <see cref="TokenExchange.Concurrent"/> off (the
/// ranks one after another on the caller's thread).
/// </summary>
public class ConcurrentBackwardTests
{
    // Every gradient of one step (inputs, all-reduced gate, every expert weight) and the outputs, as raw doubles.
    private static List<double[]> Step(ExpertParallelMoeLayer ep, EpCase c, bool concurrent)
    {
        ep.Exchange.Concurrent = concurrent;
        var run = ExpertParallelEquivalenceTests.RunParallel(c, ep);
        return [.. run.Outputs.Select(t => t.ToDoubleArray()), .. run.InputGrads.Select(t => t.ToDoubleArray()),
            run.GateGrad.ToDoubleArray(), .. run.ExpertGrads.Select(t => t.ToDoubleArray())];
    }

    internal static void AssertBitIdentical(string what, List<double[]> a, List<double[]> b)
    {
        Assert.Equal(a.Count, b.Count);
        for (int i = 0; i < a.Count; i++)
            for (int j = 0; j < a[i].Length; j++)
                if (BitConverter.DoubleToInt64Bits(a[i][j]) != BitConverter.DoubleToInt64Bits(b[i][j]))
                    throw new Xunit.Sdk.XunitException($"{what}: tensor {i}[{j}] differs: {a[i][j]:G17} vs {b[i][j]:G17}");
    }

    [Theory]
    [InlineData("topk")]
    [InlineData("topk-capacity")]
    [InlineData("rectify")]
    [InlineData("relu")]
    [InlineData("c2r")]
    public void ConcurrentBackwardIsDeterministicAndEqualsSequential(string router)
    {
        var c = new EpCase(4, 8, router, true, 5, 6, [6, 3, 7, 5], 99);
        var placement = c.MakePlacement();
        var layer = ExpertParallelEquivalenceTests.Reference(c, placement);
        var ep = new ExpertParallelMoeLayer(layer, DeviceGroup.LogicalCpu(4), placement);
        var sequential = Step(ep, c, concurrent: false);
        for (int run = 0; run < 3; run++) AssertBitIdentical($"{router} concurrent run {run} vs sequential", sequential, Step(ep, c, concurrent: true));
    }

    [Fact]
    public void BlockGradientsEqualTheWrappedLayer()
    {
        // The block (the model's view: one ordinary layer) returns the ranks' gradients to the wrapped parameters.
        var c = new EpCase(2, 4, "topk", false, 5, 6, [9], 5);
        var layer = ExpertParallelEquivalenceTests.Reference(c, ExpertPlacement.Contiguous(4, 2));
        var x = Tensor.Randn(new Shape(3, 3, 5), new Rng(1), dtype: DType.Float64);
        x.RequiresGrad = true;
        var w = Tensor.Randn(new Shape(3, 3, 5), new Rng(2), dtype: DType.Float64);

        // Reference: the 1-device layer on the same contiguous rank split (rows 0..3 on rank 0, 4..8 on rank 1).
        var flat = x.Reshape(9, 5);
        layer.ZeroGrad();
        layer.SourceDevice = 0;
        var y0 = layer.Forward(flat.Narrow(0, 0, 4));
        var reg = layer.LastRegularizationLoss!;
        layer.SourceDevice = 1;
        var y1 = layer.Forward(flat.Narrow(0, 4, 5));
        reg = reg.Add(layer.LastRegularizationLoss!);
        Tensor.Concat([y0, y1], 0).Reshape(3, 3, 5).Mul(w).Sum().Add(reg).Backward();
        var expected = layer.Parameters().Select(p => p.Grad!.ToDoubleArray()).Append(x.Grad!.ToDoubleArray()).ToList();

        layer.ZeroGrad();
        x.ZeroGrad();
        var block = new ExpertParallelBlock(layer, DeviceGroup.LogicalCpu(2));
        block.Forward(x).Mul(w).Sum().Add(block.LastRegularizationLoss!).Backward();
        var actual = layer.Parameters().Select(p => p.Grad!.ToDoubleArray()).Append(x.Grad!.ToDoubleArray()).ToList();
        for (int i = 0; i < expected.Count; i++)
            ExpertParallelEquivalenceTests.AssertClose($"block gradient {i}", Tensor.FromArray(expected[i]), Tensor.FromArray(actual[i]));
        Assert.Equal(2, block.LastExchange!.Devices);
    }
}

/// <summary>The same on two ILGPU CPU accelerators: bit-identical concurrent and sequential, run to run.</summary>
[Collection("IlgpuGroup")]
public class IlgpuConcurrentBackwardTests
{
    [Fact]
    public void IlgpuGroupBackwardIsDeterministic()
    {
        var group = DeviceGroup.IlgpuCpu(2, peerAccess: false);
        var (_, ep, _) = IlgpuExpertParallelTests.Make(group, "topk", 11);
        List<double[]> Run(bool concurrent)
        {
            ep.Exchange.Concurrent = concurrent;
            ep.ZeroGrad();
            var (ranks, _, weights) = IlgpuExpertParallelTests.Inputs(group, 11);
            var ys = ep.Forward(ranks, TestContext.Current.CancellationToken);
            IlgpuExpertParallelTests.Loss(ys, ep.LastRegularizationLoss, weights).Backward();
            ep.AllReduceGateGradients();
            return [.. ys.Select(y => y.ToDoubleArray()), .. ranks.Select(x => x.Grad!.ToDoubleArray()),
                .. ep.Parameters().Select(w => w.Grad?.ToDoubleArray() ?? [])];
        }
        var sequential = Run(concurrent: false);
        ConcurrentBackwardTests.AssertBitIdentical("ILGPU concurrent vs sequential", sequential, Run(concurrent: true));
        ConcurrentBackwardTests.AssertBitIdentical("ILGPU concurrent run to run", sequential, Run(concurrent: true));
    }
}
