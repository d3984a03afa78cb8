using PureMoE.Backends;
using PureMoE.Engine.Tests.Backends;
using PureMoE.Moe;
using PureMoE.Moe.Routing;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>The fused MoE kernels on ILGPU's CPU accelerator (the GPU emulator) against the CPU backend.</summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class IlgpuCpuMoeKernelTests : IlgpuMoeKernelTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.IlgpuCpu;
}

/// <summary>The same tests on the emulator shaped like a CUDA GPU (32-lane warps, 256-thread groups).</summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class CudaShapedMoeKernelTests : IlgpuMoeKernelTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.IlgpuCpu;

    /// <inheritdoc />
    protected override bool CudaShaped => true;
}

/// <summary>The same MoE kernel tests on CUDA device 0; skipped where there is none.</summary>
[Trait("Device", "Cuda")]
[Collection("Ilgpu")]
public sealed class CudaMoeKernelTests : IlgpuMoeKernelTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.Cuda;
}

/// <summary>
/// SwiGlu, SwiGluBackward, WeightedGatherSum and its backward on an ILGPU device against <see cref="Device.Cpu"/>'s
/// backend, on random inputs with widths that are not multiples of a warp or group (1, 3, 17, 33, 65, 130),
/// 1, 5 and 37 tokens, 1 to 4 pairs per token, some pairs without a row (−1) and some rows read by no pair. Every
/// output buffer starts dirty, so each element must be written. Tolerances: elementwise results within 2e-6
/// relative (the exponential may differ by an ulp; 2e-5 for dGate, a product of four rounded factors); the
/// combine's j-ordered sums within 1e-6 relative plus 1e-6 absolute; dW, a tree reduction on the device and a SIMD
/// dot product on the CPU, within 1e-6·Σ|terms| (both orders' float error bound is below that for d ≤ 130). All
/// scaled by <see cref="IlgpuTestBase.Slack"/> on GPUs (FMA contraction, device exp).
/// </summary>
public abstract class IlgpuMoeKernelTests : IlgpuTestBase
{
    private static readonly IBackend Cpu = K.Cpu;

    public static readonly TheoryData<int> Widths = [1, 3, 17, 33, 65, 130];

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(17)]
    [InlineData(130)]
    [InlineData(4099)]
    public void SwiGluMatchesCpu(int n)
    {
        var g = K.Rand(n, n + 1, -12, 12);
        var u = K.Rand(n, n + 2);
        var dy = K.Rand(n, n + 3);

        var yCpu = K.S(new float[n]);
        Cpu.SwiGlu(K.S(g), K.S(u), yCpu, n);
        var y = Up(K.Rand(n, n + 4));
        B.SwiGlu(Up(g), Up(u), y, n);
        K.Close(K.F(yCpu), DownF(y), 2e-6 * Slack, 1e-6 * Slack, $"y n={n}");

        var dgCpu = K.S(new float[n]);
        var duCpu = K.S(new float[n]);
        Cpu.SwiGluBackward(K.S(g), K.S(u), K.S(dy), dgCpu, duCpu, n);
        // Separate dUp, then dUp aliasing dy (as GroupedSwiGlu calls it).
        var dg = Up(K.Rand(n, n + 5));
        var du = Up(K.Rand(n, n + 6));
        B.SwiGluBackward(Up(g), Up(u), Up(dy), dg, du, n);
        K.Close(K.F(dgCpu), DownF(dg), 2e-5 * Slack, 1e-6 * Slack, $"dGate n={n}");
        K.Close(K.F(duCpu), DownF(du), 2e-6 * Slack, 1e-6 * Slack, $"dUp n={n}");
        var dgAliased = Up(K.Rand(n, n + 7));
        var dyAliased = Up(dy);
        B.SwiGluBackward(Up(g), Up(u), dyAliased, dgAliased, dyAliased, n);
        K.Close(K.F(dgCpu), DownF(dgAliased), 2e-5 * Slack, 1e-6 * Slack, $"dGate aliased n={n}");
        K.Close(K.F(duCpu), DownF(dyAliased), 2e-6 * Slack, 1e-6 * Slack, $"dUp aliased n={n}");
    }

    /// <summary>
    /// A combine index for <paramref name="tokens"/>·<paramref name="m"/> pairs over tokens·m + 3 rows: a random
    /// permutation (each row read by at most one pair), about one pair in five −1, and the last pair −1 whenever
    /// there is more than one pair.
    /// </summary>
    private static long[] CombineIndex(int tokens, int m, int seed, out int rowCount)
    {
        var rng = new Random(seed);
        rowCount = tokens * m + 3;
        var perm = Enumerable.Range(0, rowCount).OrderBy(_ => rng.Next()).ToArray();
        var ix = new long[tokens * m];
        for (int i = 0; i < ix.Length; i++) ix[i] = rng.Next(5) == 0 ? -1 : perm[i];
        if (ix.Length > 1) ix[^1] = -1;
        return ix;
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void WeightedGatherSumMatchesCpu(int d)
    {
        foreach (var (tokens, m, seed, what, ix, rowCount, rows, w) in CombineCases(d))
        {
            var outCpu = K.S(new float[tokens * d]);
            Cpu.WeightedGatherSum(K.S(rows), K.S(ix), K.S(w), outCpu, tokens, m, d, rowCount);
            var output = Up(K.Rand(tokens * d, seed + 3));
            B.WeightedGatherSum(Up(rows), Up(ix), Up(w), output, tokens, m, d, rowCount);
            K.Close(K.F(outCpu), DownF(output), 1e-6 * Slack, 1e-6 * Slack, $"out {what}");
        }
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void WeightedGatherSumBackwardMatchesCpu(int d)
    {
        foreach (var (tokens, m, seed, what, ix, rowCount, rows, w) in CombineCases(d))
        {
            var dOut = K.Rand(tokens * d, seed + 4);
            var drCpu = K.S(new float[rowCount * d]);
            var dwCpu = K.S(new float[tokens * m]);
            Cpu.WeightedGatherSumBackward(K.S(rows), K.S(ix), K.S(w), K.S(dOut), drCpu, dwCpu, tokens, m, d, rowCount);
            var dwTol = DotTolerance(rows, ix, dOut, tokens, m, d);

            Storage rowsDev = Up(rows), ixDev = Up(ix), wDev = Up(w), dOutDev = Up(dOut);
            var dr = Up(K.Rand(rowCount * d, seed + 5));
            var dw = Up(K.Rand(tokens * m, seed + 6));
            B.WeightedGatherSumBackward(rowsDev, ixDev, wDev, dOutDev, dr, dw, tokens, m, d, rowCount);
            K.Close(K.F(drCpu), DownF(dr), 1e-6 * Slack, 1e-6 * Slack, $"dRows {what}");
            CloseEach(K.F(dwCpu), DownF(dw), dwTol, $"dW {what}");

            var drOnly = Up(K.Rand(rowCount * d, seed + 7));
            B.WeightedGatherSumBackward(rowsDev, ixDev, wDev, dOutDev, drOnly, null, tokens, m, d, rowCount);
            K.Close(K.F(drCpu), DownF(drOnly), 1e-6 * Slack, 1e-6 * Slack, $"dRows only {what}");

            var dwOnly = Up(K.Rand(tokens * m, seed + 8));
            B.WeightedGatherSumBackward(rowsDev, ixDev, wDev, dOutDev, null, dwOnly, tokens, m, d, rowCount);
            CloseEach(K.F(dwCpu), DownF(dwOnly), dwTol, $"dW only {what}");
        }
    }

    /// <summary>The combine's inputs for tokens 1, 5, 37 × m = 1 … 4 at width d: index (with −1s), rows and weights.</summary>
    private static IEnumerable<(int Tokens, int M, int Seed, string What, long[] Ix, int RowCount, float[] Rows, float[] W)> CombineCases(int d)
    {
        foreach (int tokens in new[] { 1, 5, 37 })
            for (int m = 1; m <= 4; m++)
            {
                int seed = tokens * 1000 + m * 100 + d;
                var ix = CombineIndex(tokens, m, seed, out int rowCount);
                yield return (tokens, m, seed, $"T={tokens} m={m} d={d}", ix, rowCount, K.Rand(rowCount * d, seed + 1), K.Rand(tokens * m, seed + 2, 0, 1));
            }
    }

    /// <summary>1e-6·Slack·Σ_i |dOut[t, i]·rows[r, i]| for each pair: a bound on the float error of either summation order.</summary>
    private double[] DotTolerance(float[] rows, long[] ix, float[] dOut, int tokens, int m, int d)
    {
        var tol = new double[tokens * m];
        for (int p = 0; p < tol.Length; p++)
        {
            double s = 0;
            if (ix[p] >= 0)
                for (int i = 0; i < d; i++) s += Math.Abs((double)dOut[p / m * d + i] * rows[ix[p] * d + i]);
            tol[p] = 1e-6 * Slack * s;
        }
        return tol;
    }

    private static void CloseEach(float[] expected, float[] actual, double[] tol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tol[i], $"{what}[{i}]: expected {expected[i]:R}, got {actual[i]:R} (tol {tol[i]:G3})");
    }

    [Fact]
    public void OutOfRangeIndicesAddNothingOnTheDevice()
    {
        // The CPU backends throw; a kernel cannot, so an index outside [0, rowCount) is documented to act like −1.
        int tokens = 3, m = 2, d = 5, rowCount = 4;
        long[] ix = [0, 4, -7, 1, 2, long.MaxValue];
        long[] asMissing = [0, -1, -1, 1, 2, -1];
        var rows = K.Rand(rowCount * d, 1);
        var w = K.Rand(tokens * m, 2, 0, 1);
        var dOut = K.Rand(tokens * d, 3);
        var outCpu = K.S(new float[tokens * d]);
        Cpu.WeightedGatherSum(K.S(rows), K.S(asMissing), K.S(w), outCpu, tokens, m, d, rowCount);
        var output = Up(K.Rand(tokens * d, 4));
        B.WeightedGatherSum(Up(rows), Up(ix), Up(w), output, tokens, m, d, rowCount);
        K.Close(K.F(outCpu), DownF(output), 1e-6 * Slack, 1e-6 * Slack, "out");

        var drCpu = K.S(new float[rowCount * d]);
        var dwCpu = K.S(new float[tokens * m]);
        Cpu.WeightedGatherSumBackward(K.S(rows), K.S(asMissing), K.S(w), K.S(dOut), drCpu, dwCpu, tokens, m, d, rowCount);
        var dr = Up(K.Rand(rowCount * d, 5));
        var dw = Up(K.Rand(tokens * m, 6));
        B.WeightedGatherSumBackward(Up(rows), Up(ix), Up(w), Up(dOut), dr, dw, tokens, m, d, rowCount);
        K.Close(K.F(drCpu), DownF(dr), 1e-6 * Slack, 1e-6 * Slack, "dRows");
        K.Close(K.F(dwCpu), DownF(dw), 1e-5 * Slack, 1e-5 * Slack, "dW");
    }

    [Fact]
    public void CombineIsBitIdenticalRunToRun()
    {
        int tokens = 37, m = 3, d = 65;
        var ix = CombineIndex(tokens, m, 11, out int rowCount);
        Storage rows = Up(K.Rand(rowCount * d, 12)), index = Up(ix), w = Up(K.Rand(tokens * m, 13)), dOut = Up(K.Rand(tokens * d, 14));
        (float[] Out, float[] DW) Run()
        {
            var o = B.Allocate(DType.Float32, tokens * d);
            var dw = B.Allocate(DType.Float32, tokens * m);
            B.WeightedGatherSum(rows, index, w, o, tokens, m, d, rowCount);
            B.WeightedGatherSumBackward(rows, index, w, dOut, null, dw, tokens, m, d, rowCount);
            return (DownF(o), DownF(dw));
        }
        var (o1, dw1) = Run();
        var (o2, dw2) = Run();
        K.SameBits(o1, o2, "out");
        K.SameBits(dw1, dw2, "dW");
    }

    /// <summary>
    /// Softmax, then the k most probable experts with their probabilities as weights (PreSoftmax TopK), in float32
    /// ops only: exercises dispatch, GroupedSwiGlu and the combine on a device whatever the library routers need.
    /// </summary>
    private sealed class Float32TopKRouter(int experts, int k) : IRouter
    {
        public string Name => "float32-topk";

        public int Experts => experts;

        public RoutingPlan Route(Tensor logits, RoutingContext context)
        {
            var (weights, chosen) = logits.Softmax(-1).TopK(k);
            int[] expert = chosen.ToLongArray().Select(e => (int)e).ToArray();
            return new RoutingPlan(logits.Shape[0], experts, k, expert, weights);
        }
    }

    /// <summary>Forward and backward of an MoE layer (d = 6, ff = 10, 4 experts, 7 tokens) on one device.</summary>
    private static (float[] Y, float[] Dx, Dictionary<string, float[]> Grads) RunMoeLayer(Device device, IRouter router, float[] x, float[] target)
    {
        var layer = new MoeLayer(6, 10, router, new Rng(5), 0.4, DType.Float32, device);
        var tx = Tensor.FromHost(x, [7, 6], device);
        tx.RequiresGrad = true;
        var y = layer.Forward(tx);
        y.Mul(Tensor.FromHost(target, [7, 6], device)).Sum().Backward();
        var grads = layer.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Grad!.ToFloatArray());
        return (y.ToFloatArray(), tx.Grad!.ToFloatArray(), grads);
    }

    private void MoeLayerMatchesCpu(Func<IRouter> router)
    {
        var x = K.Rand(7 * 6, 21, -1, 1);
        var target = K.Rand(7 * 6, 22);
        var cpu = RunMoeLayer(Device.Cpu, router(), x, target);
        var dev = RunMoeLayer(Dev, router(), x, target);
        double tol = 2e-5 * Slack;
        K.Close(cpu.Y, dev.Y, tol, tol, "y");
        K.Close(cpu.Dx, dev.Dx, tol, tol, "dx");
        Assert.Equal(cpu.Grads.Keys.Order(), dev.Grads.Keys.Order());
        foreach (var (name, g) in cpu.Grads) K.Close(g, dev.Grads[name], tol, tol, name);
    }

    [Fact]
    public void MoeLayerWithAFloat32RouterMatchesCpu() => MoeLayerMatchesCpu(() => new Float32TopKRouter(4, 2));

    [Fact]
    public void MoeLayerWithTopKRouterMatchesCpu() => MoeLayerMatchesCpu(() => new TopKRouter(4, new TopKOptions { K = 2 }));
}
