using PureMoE.Backends;
using PureMoE.Backends.Ilgpu;
using PureMoE.Engine.Tests.Backends;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>The grouped GEMM on the 256-thread CPU accelerator (the GPU emulator) against Device.Cpu.</summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class IlgpuCpuGroupedGemmTests : IlgpuGroupedGemmTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.IlgpuCpu;

    [Fact]
    public void MoreGroupsThanOneLaunchReadAreStagedOnlyWhileTheBufferFitsAnInt()
    {
        Assert.True(IlgpuBackend.CanStage(GroupOperands.Count, 4096L * 14336));      // read where they are: any size
        Assert.True(IlgpuBackend.CanStage(18, 64L * 128));
        Assert.True(IlgpuBackend.CanStage(36, 4096L * 14336));                       // 2,113,929,216 elements
        Assert.False(IlgpuBackend.CanStage(37, 4096L * 14336));                      // past 2³¹ − 1: one GEMM per group
        Assert.False(IlgpuBackend.CanStage(256, 7168L * 2048));
    }
}

/// <summary>The same tests on CUDA device 0; skipped where there is none.</summary>
[Trait("Device", "Cuda")]
[Collection("Ilgpu")]
public sealed class CudaGroupedGemmTests : IlgpuGroupedGemmTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.Cuda;
}

/// <summary>The same tests with the 64×64 grouped kernel forced, on the GPU emulator.</summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class IlgpuCpuGrouped64GemmTests : IlgpuGroupedGemmTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.IlgpuCpu;

    /// <inheritdoc />
    private protected override GroupedGemmChoice Forced => GroupedGemmChoice.Grouped64;
}

/// <summary>The same tests with the 64×64 grouped kernel forced, on CUDA device 0; skipped where there is none.</summary>
[Trait("Device", "Cuda")]
[Collection("Ilgpu")]
public sealed class CudaGrouped64GemmTests : IlgpuGroupedGemmTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.Cuda;

    /// <inheritdoc />
    private protected override GroupedGemmChoice Forced => GroupedGemmChoice.Grouped64;
}

/// <summary>
/// The one-launch grouped GEMM (<see cref="IlgpuKernels.SgemmGrouped128"/>, or <see cref="IlgpuKernels.SgemmGrouped64"/>
/// where <see cref="Forced"/> says so), forced, against the CPU backend's
/// per-group loop: both row-grouped forms (y = x·Wᵀ and dx = dy·W) and the K-grouped one (dW = dyᵀ·x), with group
/// sizes 0, 1, 3, 130, 257, sides 1, 17, 65, 129, 1 to 5 groups, alpha ≠ 1, beta 0 (C not read: NaN must vanish)
/// and beta ≠ 0; then GroupedMatMul and GroupedSwiGlu with autograd on the device against Device.Cpu. Each test
/// checks that the grouped kernel really ran. Shapes are small: the emulator is slow.
/// </summary>
public abstract class IlgpuGroupedGemmTests : IlgpuTestBase
{
    /// <summary>The grouped kernel the tests force (the 128×128 one unless a subclass says otherwise).</summary>
    private protected virtual GroupedGemmChoice Forced => GroupedGemmChoice.Grouped;

    /// <summary>The name <see cref="IlgpuBackend.LaunchesByKernel"/> counts the forced kernel's launches under.</summary>
    private string ForcedKernelName => Forced == GroupedGemmChoice.Grouped64 ? "sgemmGrouped64" : "sgemmGrouped";

    /// <summary>The backend under test: CUDA device 0, or the 256-thread CPU accelerator.</summary>
    private IlgpuBackend G => Kind == DeviceKind.Cuda ? B : WideCpu.Backend;

    /// <summary>The CPU backend as an <see cref="IBackend"/> (its grouped GEMMs are the interface's defaults).</summary>
    private static IBackend CpuBackend => K.Cpu;

    /// <summary>Its device, for tensor-level tests.</summary>
    private Device D => Kind == DeviceKind.Cuda ? Dev : WideCpu.Device;

    private float[] DownG(Storage s)
    {
        var r = new float[s.Length];
        G.Download(s, 0, r, r.Length);
        return r;
    }

    /// <summary>(group sizes, one side, the other side): the 1..5-group cases of both forms.</summary>
    public static TheoryData<int[], int, int> Cases => new()
    {
        { [130], 17, 65 },
        { [0, 257], 65, 1 },
        { [1, 0, 3], 129, 17 },
        { [3, 130, 0, 1], 1, 129 },
        { [0, 1, 3, 130, 257], 65, 17 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void RowGroupedMatchesCpu(int[] sizes, int n, int k)
    {
        int rows = sizes.Sum();
        var rng = new Random(rows * 31 + n * 7 + k);
        foreach (bool transB in new[] { true, false })
            foreach (double beta in new[] { 0.0, 0.5 })
            {
                var a = K.Rand(rows * k, rng.Next());
                var b = sizes.Select(_ => K.Rand(n * k, rng.Next())).ToArray();
                var c = K.Rand(rows * n, rng.Next());
                if (beta == 0) c[^1] = float.NaN; // beta = 0 overwrites C without reading it
                var expected = K.S(c);
                CpuBackend.GroupedGemm(sizes, n, k, 1.5, K.S(a), b.Select(m => (Storage)K.S(m)).ToArray(), transB, beta, expected);

                var cg = G.Upload(c);
                Grouped(launches: 1, () => G.GroupedGemm(sizes, n, k, 1.5, G.Upload(a), b.Select(G.Upload).ToArray(), transB, beta, cg));
                K.Close(K.F(expected), DownG(cg), 1e-5 * Slack, 2e-6 * k * Slack, $"sizes [{string.Join(",", sizes)}] n={n} k={k} transB={transB} beta={beta}");
            }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void KGroupedMatchesCpu(int[] sizes, int m, int n)
    {
        int rows = sizes.Sum();
        var rng = new Random(rows * 37 + m * 5 + n);
        foreach (double beta in new[] { 0.0, 0.5 })
        {
            var a = K.Rand(rows * m, rng.Next());
            var b = K.Rand(rows * n, rng.Next());
            var c = sizes.Select(_ => K.Rand(m * n, rng.Next())).ToArray();
            if (beta == 0) foreach (var cg in c) cg[^1] = float.NaN;
            // With 3 or more groups, the second has no output (skipped).
            bool Skipped(int g) => sizes.Length >= 3 && g == 1;
            var expected = c.Select((x, g) => Skipped(g) ? null : K.S(x)).ToArray();
            CpuBackend.GroupedGemmKGrouped(sizes, m, n, 1.5, K.S(a), K.S(b), beta, expected.Select(s => (Storage?)s).ToArray());

            var outputs = c.Select((x, g) => Skipped(g) ? null : G.Upload(x)).ToArray();
            Grouped(launches: 1, () => G.GroupedGemmKGrouped(sizes, m, n, 1.5, G.Upload(a), G.Upload(b), beta, outputs));
            for (int g = 0; g < sizes.Length; g++)
                if (!Skipped(g))
                    K.Close(K.F(expected[g]!), DownG(outputs[g]!), 1e-5 * Slack, 2e-6 * Math.Max(1, sizes[g]) * Slack,
                        $"group {g} of [{string.Join(",", sizes)}] m={m} n={n} beta={beta}");
        }
    }

    [Fact]
    public void LaunchesCountKernelsFillsAndCopies()
    {
        // Launches counts what the device queues (each costs the host a few µs on a GPU): a zero-filled allocation
        // is one fill, a kernel one launch, and a forced grouped GEMM of up to 16 groups its one launch (each
        // group's weight is read where it lies).
        var x = G.Upload(K.Rand(100, 1));
        long before = G.Launches;
        var byKernel = G.LaunchesByKernel;
        long Grew(string name) => G.LaunchesByKernel.GetValueOrDefault(name) - byKernel.GetValueOrDefault(name);
        var y = G.Allocate(DType.Float32, 100);
        Assert.Equal(before + 1, G.Launches);
        G.Allocate(DType.Float32, 0);
        Assert.Equal(before + 1, G.Launches);
        G.Unary(UnaryOp.Exp, x, 0, y, 0, 100, 0);
        Assert.Equal(before + 2, G.Launches);
        int[] sizes = [3, 0, 5];
        var a = G.Upload(K.Rand(8 * 16, 2));
        var w = sizes.Select((_, g) => G.Upload(K.Rand(16 * 16, 3 + g))).ToArray();
        var c = G.Upload(new float[8 * 16]);
        Assert.Equal(before + 2, G.Launches); // uploads are not launches
        Grouped(launches: 1, () => G.GroupedGemm(sizes, 16, 16, 1, a, w, true, 0, c));
        Assert.Equal(before + 3, G.Launches);
        // The same launches, by name: the counts per kernel add up to the total.
        Assert.Equal(1, Grew("zero fill"));
        Assert.Equal(1, Grew("unary Exp"));
        Assert.Equal(1, Grew(ForcedKernelName));
        Assert.Equal(G.Launches, G.LaunchesByKernel.Values.Sum());
    }

    [Fact]
    public void MoreGroupsThanOneLaunchTakesAreStagedAndStillMatchCpu()
    {
        // 18 groups with rows (two empty) exceed GroupOperands.Count: the row-grouped form copies each group's B into
        // one staged buffer first, the K-grouped form copies each output back from one.
        int[] sizes = [.. Enumerable.Range(0, 20).Select(g => g is 3 or 11 ? 0 : 1 + g * 7 % 9)];
        int rows = sizes.Sum(), n = 17, k = 9, used = sizes.Count(x => x > 0);
        Assert.True(used > GroupOperands.Count);
        var rng = new Random(5);
        var a = K.Rand(rows * k, rng.Next());
        var b = sizes.Select(_ => K.Rand(n * k, rng.Next())).ToArray();
        var expected = K.S(new float[rows * n]);
        CpuBackend.GroupedGemm(sizes, n, k, 1, K.S(a), b.Select(m => (Storage)K.S(m)).ToArray(), true, 0, expected);
        var y = G.Upload(new float[rows * n]);
        var ag = G.Upload(a);
        var bg = b.Select(G.Upload).ToArray();
        long before = G.Launches;
        Grouped(launches: 1, () => G.GroupedGemm(sizes, n, k, 1, ag, bg, true, 0, y));
        Assert.Equal(before + 1 + used, G.Launches);
        K.Close(K.F(expected), DownG(y), 1e-5 * Slack, 2e-6 * k * Slack, "row-grouped, staged");

        var dy = K.Rand(rows * n, rng.Next());
        var dwExpected = sizes.Select(_ => K.S(new float[n * k])).ToArray();
        CpuBackend.GroupedGemmKGrouped(sizes, n, k, 1, K.S(dy), K.S(a), 0, dwExpected.Select(x => (Storage?)x).ToArray());
        var dw = sizes.Select(_ => (Storage?)G.Upload(new float[n * k])).ToArray();
        var dyg = G.Upload(dy);
        before = G.Launches;
        Grouped(launches: 1, () => G.GroupedGemmKGrouped(sizes, n, k, 1, dyg, ag, 0, dw));
        Assert.Equal(before + 1 + sizes.Length, G.Launches);
        for (int g = 0; g < sizes.Length; g++)
            K.Close(K.F(dwExpected[g]), DownG(dw[g]!), 1e-5 * Slack, 2e-6 * Math.Max(1, sizes[g]) * Slack, $"dW{g}, staged");
    }

    [Fact]
    public void AutoLaunchesOnceWithTheLargeTilesOnlyWhenTheyFillTheDevice()
    {
        var b = G;
        Assert.Equal(GroupedGemmChoice.Auto, b.GroupedGemmMode);
        int sms = b.Accelerator.NumMultiprocessors;
        Assert.Equal(128, b.GroupedGemmTile(2, sms, 128));
        Assert.Equal(0, b.GroupedGemmTile(1, 64L * sms, 1024));  // one GEMM: no table, plain Gemm
        Assert.Equal(64, b.GroupedGemmTile(8, 64L * sms, 127));  // outputs narrower than a large tile
        Assert.Equal(64, b.GroupedGemmTile(2, 1, 1));            // a small MoE: one launch all the same
        if (sms > 1) Assert.Equal(64, b.GroupedGemmTile(8, sms - 1, 1024));
        try
        {
            b.GemmKernel = GemmKernelChoice.Tiled;
            Assert.Equal(0, b.GroupedGemmTile(8, 64L * sms, 1024));
            b.GemmKernel = GemmKernelChoice.Auto;
            b.GroupedGemmMode = GroupedGemmChoice.PerGroup;
            Assert.Equal(0, b.GroupedGemmTile(8, 64L * sms, 1024));
            b.GroupedGemmMode = GroupedGemmChoice.Grouped;
            Assert.Equal(128, b.GroupedGemmTile(1, 1, 1));
            b.GroupedGemmMode = GroupedGemmChoice.Grouped64;
            Assert.Equal(64, b.GroupedGemmTile(1, 64L * sms, 1024));
        }
        finally
        {
            b.GemmKernel = GemmKernelChoice.Auto;
            b.GroupedGemmMode = GroupedGemmChoice.Auto;
        }
    }

    [Fact]
    public void GroupedMatMulMatchesCpuWithGradients()
    {
        int[] sizes = [0, 3, 130, 1];
        int n = sizes.Sum(), k = 17, outDim = 65;
        var x = K.Rand(n * k, 1, -1, 1);
        var ws = sizes.Select((_, g) => K.Rand(outDim * k, 10 + g, -1, 1)).ToArray();
        var target = K.Rand(n * outDim, 2);
        (float[] Y, float[] Dx, float[][] Dw) Run(Device device)
        {
            var tx = Tensor.FromHost(x, [n, k], device);
            tx.RequiresGrad = true;
            var tw = ws.Select(w => Tensor.FromHost(w, [outDim, k], device)).ToArray();
            foreach (var w in tw) w.RequiresGrad = true;
            var y = Tensor.GroupedMatMul(tx, tw, sizes);
            y.Mul(Tensor.FromHost(target, [n, outDim], device)).Sum().Backward();
            return (y.ToFloatArray(), tx.Grad!.ToFloatArray(), tw.Select(w => w.Grad!.ToFloatArray()).ToArray());
        }
        var cpu = Run(Device.Cpu);
        // Forward 1, backward dx 1 and dW 1.
        var dev = Grouped(launches: 3, () => Run(D));
        double tol = 2e-5 * Slack;
        K.Close(cpu.Y, dev.Y, tol, tol, "y");
        K.Close(cpu.Dx, dev.Dx, tol, tol, "dx");
        for (int g = 0; g < sizes.Length; g++) K.Close(cpu.Dw[g], dev.Dw[g], tol, tol * 10, $"dW{g}");
    }

    [Fact]
    public void GroupedSwiGluMatchesCpuWithGradients()
    {
        int[] sizes = [2, 0, 129, 5];
        int n = sizes.Sum(), d = 17, ff = 33, groups = sizes.Length;
        var x = K.Rand(n * d, 3, -1, 1);
        float[][] W(int seed, int rows, int cols) => sizes.Select((_, g) => K.Rand(rows * cols, seed + g, -0.5f, 0.5f)).ToArray();
        var (w1, w3, w2) = (W(20, ff, d), W(30, ff, d), W(40, d, ff));
        var target = K.Rand(n * d, 4);
        (float[] Y, float[] Dx, float[][] Dw) Run(Device device)
        {
            var tx = Tensor.FromHost(x, [n, d], device);
            tx.RequiresGrad = true;
            Tensor[] T(float[][] ws, int rows, int cols) => ws.Select(w =>
            {
                var t = Tensor.FromHost(w, [rows, cols], device);
                t.RequiresGrad = true;
                return t;
            }).ToArray();
            var (t1, t3, t2) = (T(w1, ff, d), T(w3, ff, d), T(w2, d, ff));
            var y = Tensor.GroupedSwiGlu(tx, t1, t3, t2, sizes);
            y.Mul(Tensor.FromHost(target, [n, d], device)).Sum().Backward();
            Tensor[] all = [.. t1, .. t3, .. t2];
            return (y.ToFloatArray(), tx.Grad!.ToFloatArray(), all.Select(w => w.Grad!.ToFloatArray()).ToArray());
        }
        var cpu = Run(Device.Cpu);
        // Forward 3 (h1, h3, y); backward dp, dW2, dx (2), dW1, dW3.
        var dev = Grouped(launches: 9, () => Run(D));
        double tol = 2e-5 * Slack;
        K.Close(cpu.Y, dev.Y, tol, tol, "y");
        K.Close(cpu.Dx, dev.Dx, tol, tol, "dx");
        for (int i = 0; i < 3 * groups; i++)
            K.Close(cpu.Dw[i], dev.Dw[i], tol, tol * 10, $"{(i / groups) switch { 0 => "dW1", 1 => "dW3", _ => "dW2" }} of group {i % groups}");
    }

    /// <summary>Runs <paramref name="body"/> with the grouped kernel forced and checks how many launches it made.</summary>
    private T Grouped<T>(int launches, Func<T> body)
    {
        var b = G;
        Assert.True(b.SupportsLargeGemm, "the 256-thread GEMM kernels are not supported here");
        b.GroupedGemmMode = Forced;
        try
        {
            long before = b.GroupedGemmLaunches, named = b.LaunchesByKernel.GetValueOrDefault(ForcedKernelName);
            var result = body();
            Assert.Equal(launches, b.GroupedGemmLaunches - before);
            Assert.Equal(launches, b.LaunchesByKernel.GetValueOrDefault(ForcedKernelName) - named);
            return result;
        }
        finally
        {
            b.GroupedGemmMode = GroupedGemmChoice.Auto;
        }
    }

    private void Grouped(int launches, Action body) => Grouped(launches, () =>
    {
        body();
        return 0;
    });
}

/// <summary>On the CPU the grouped GEMMs are exactly the per-group Gemm calls (bit for bit).</summary>
public sealed class CpuGroupedGemmTests
{
    [Fact]
    public void DefaultIsThePerGroupGemmLoop()
    {
        int[] sizes = [4, 0, 9, 1];
        int rows = sizes.Sum(), n = 11, k = 7;
        IBackend cpu = K.Cpu;
        var a = K.Rand(rows * k, 1);
        var b = sizes.Select((_, g) => K.Rand(n * k, 2 + g)).ToArray();
        var grouped = K.S(new float[rows * n]);
        cpu.GroupedGemm(sizes, n, k, 1, K.S(a), b.Select(x => (Storage)K.S(x)).ToArray(), true, 0, grouped);
        var loop = K.S(new float[rows * n]);
        var dwGrouped = sizes.Select(_ => K.S(new float[n * k])).ToArray();
        cpu.GroupedGemmKGrouped(sizes, n, k, 1, K.S(grouped.Data), K.S(a), 0, dwGrouped.Select(s => (Storage?)s).ToArray());
        int row = 0;
        for (int g = 0; g < sizes.Length; row += sizes[g], g++)
        {
            if (sizes[g] > 0)
                cpu.Gemm(false, true, sizes[g], n, k, 1, K.S(a), row * k, k, 0, K.S(b[g]), 0, k, 0, 0, loop, row * n, n, 0, 1);
            var dw = K.S(new float[n * k]);
            if (sizes[g] > 0)
                cpu.Gemm(true, false, n, k, sizes[g], 1, K.S(grouped.Data), row * n, n, 0, K.S(a), row * k, k, 0, 0, dw, 0, k, 0, 1);
            K.SameBits(K.F(dw), K.F(dwGrouped[g]), $"dW{g}");
        }
        K.SameBits(K.F(loop), K.F(grouped), "y");
    }
}
