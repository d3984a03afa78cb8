using PureMoE.Backends;
using PureMoE.Backends.Ilgpu;
using PureMoE.Engine.Tests.Backends;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>Both SGEMM kernels on ILGPU's CPU accelerator (the GPU emulator) against the reference backend.</summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class IlgpuCpuGemmTests : IlgpuGemmTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.IlgpuCpu;
}

/// <summary>The same tests on CUDA device 0; skipped where there is none.</summary>
[Trait("Device", "Cuda")]
[Collection("Ilgpu")]
public sealed class CudaGemmTests : IlgpuGemmTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.Cuda;
}

/// <summary>
/// The 128×128 SGEMM kernel (and the tiled one, forced) on shapes that are not multiples of its tile, its K step or
/// the 4-wide vectors (1, 3, 17, 33, 65, 130, 257), every transposition, beta 0 (C not read: NaN there must vanish)
/// and beta ≠ 0, padded leading dimensions, odd offsets, batch strides including a broadcast (0) one. Shapes are
/// small: the CPU accelerator runs each group's 256 threads as an emulated GPU (~0.1 GFLOP/s).
/// Device.IlgpuCpu simulates a GPU with 16-thread groups, too small for the 256-thread kernel, so the emulator
/// variant runs on its own CPU accelerator shaped like an NVIDIA multiprocessor (32-lane warps, 256-thread groups).
/// </summary>
public abstract class IlgpuGemmTests : IlgpuTestBase
{
    /// <summary>The backend under test: CUDA device 0, or the 256-thread CPU accelerator.</summary>
    private IlgpuBackend G => Kind == DeviceKind.Cuda ? B : WideCpu.Backend;

    private Storage UpG(float[] a) => G.Upload(a);

    private float[] DownG(Storage s)
    {
        var r = new float[s.Length];
        G.Download(s, 0, r, r.Length);
        return r;
    }

    [Theory]
    [InlineData(1, 1, 1, 1)]
    [InlineData(3, 17, 33, 1)]
    [InlineData(17, 3, 9, 2)]
    [InlineData(130, 33, 17, 1)]
    [InlineData(33, 257, 8, 1)]
    [InlineData(257, 130, 20, 1)]
    [InlineData(65, 129, 3, 3)]
    public void LargeKernelMatchesReference(int m, int n, int k, int batch) =>
        WithKernel(GemmKernelChoice.Large, () => Check(m, n, k, batch, betas: [0.0, 0.5]));

    [Theory]
    [InlineData(1, 1, 1, 1)]
    [InlineData(3, 17, 33, 1)]
    [InlineData(17, 3, 9, 2)]
    [InlineData(65, 33, 17, 1)]
    [InlineData(130, 129, 20, 1)]
    [InlineData(63, 65, 3, 3)]
    [InlineData(65, 33, 32, 1)]   // K a multiple of the 16-deep staged tile: no remainder
    [InlineData(17, 66, 8, 2)]    // K = 8: the remainder tile's second half lies wholly past K
    [InlineData(64, 64, 48, 1)]
    public void MediumKernelMatchesReference(int m, int n, int k, int batch) =>
        WithKernel(GemmKernelChoice.Medium, () => Check(m, n, k, batch, betas: [0.0, 0.5]));

    [Theory]
    [InlineData(130, 65, 17, 2)]
    [InlineData(257, 33, 9, 1)]
    public void TiledKernelMatchesReference(int m, int n, int k, int batch) =>
        WithKernel(GemmKernelChoice.Tiled, () => Check(m, n, k, batch, betas: [0.5]));

    [Theory]
    [InlineData("Tiled")]
    [InlineData("Medium")]
    [InlineData("Large")]
    public void ABatchLargerThanOneLaunchIsSplitAcrossLaunches(string kernel)
    {
        var choice = Enum.Parse<GemmKernelChoice>(kernel);
        // CUDA caps the grid's y dimension (the batch) at 65,535; with the cap lowered to 3, a batch of 7 takes
        // three launches (3 + 3 + 1), each offset to its own matrices, shared B (stride 0) included.
        var b = G;
        Assert.Equal(b.Accelerator.MaxGridSize.Y, b.MaxGemmBatchPerLaunch);
        b.MaxGemmBatchPerLaunch = 3;
        try
        {
            WithKernel(choice, () => Check(9, 20, 5, 7, betas: [0.0, 0.5]));
        }
        finally
        {
            b.MaxGemmBatchPerLaunch = b.Accelerator.MaxGridSize.Y;
        }
    }

    [Theory]
    [InlineData("Medium")]
    [InlineData("Large")]
    public void KernelHandlesEmptyK(string kernel)
    {
        // K = 0: C = beta·C (no tile is staged; the prologue's guarded loads read nothing).
        WithKernel(Enum.Parse<GemmKernelChoice>(kernel), () => Check(5, 7, 0, 1, betas: [0.0, 0.5]));
    }

    [Fact]
    public void AutoTakesTheLargeKernelOnlyForShapesThatFillTheDevice()
    {
        var b = G;
        Assert.Equal(GemmKernelChoice.Auto, b.GemmKernel);
        Assert.True(b.SupportsLargeGemm);
        int sms = b.Accelerator.NumMultiprocessors;
        const GemmKernelChoice large = GemmKernelChoice.Large, medium = GemmKernelChoice.Medium;
        Assert.Equal(medium, b.GemmKernelFor(127, 4096, 64));
        Assert.Equal(medium, b.GemmKernelFor(4096, 100, 64));
        Assert.Equal(large, b.GemmKernelFor(128 * sms, 128, 1));
        if (sms > 1) Assert.Equal(medium, b.GemmKernelFor(128, 128, 1));
        Assert.Equal(large, b.GemmKernelFor(128, 128, sms));
        // Device.IlgpuCpu's 16-thread groups cannot run either: the group-size tiled kernel, whatever is asked.
        var small = (IlgpuBackend)Device.IlgpuCpu.Backend;
        Assert.False(small.SupportsLargeGemm);
        Assert.Equal(GemmKernelChoice.Tiled, small.GemmKernelFor(128 * sms, 128, 64));
    }

    [Theory]
    [InlineData("Medium")]
    [InlineData("Large")]
    public void KernelMatchesCpuOnALargeProduct(string kernel)
    {
        var choice = Enum.Parse<GemmKernelChoice>(kernel);
        // A product big enough that every group runs full tiles over many K steps, ragged only at the edges.
        // The emulator is slow, so it gets a smaller one than a GPU.
        var (m, n, k) = Kind == DeviceKind.Cuda ? (1031, 2050, 777) : (259, 131, 70);
        var rng = new Random(7);
        var a = K.Rand(m * k, rng.Next(), -1, 1);
        var bm = K.Rand(k * n, rng.Next(), -1, 1);
        var expected = new float[m * n];
        var ce = K.S(expected);
        K.Cpu.Gemm(false, false, m, n, k, 1, K.S(a), 0, k, 0, K.S(bm), 0, n, 0, 0, ce, 0, n, 0, 1);
        WithKernel(choice, () =>
        {
            var cg = G.Allocate(DType.Float32, m * n);
            G.Fill(cg, 0, m * n, float.NaN);
            G.Gemm(false, false, m, n, k, 1, UpG(a), 0, k, 0, UpG(bm), 0, n, 0, 0, cg, 0, n, 0, 1);
            K.Close(K.F(ce), DownG(cg), 1e-5 * Slack, 2e-6 * k * Slack, $"gemm {m}x{n}x{k}");
        });
    }

    [Theory]
    [InlineData(17, 33, 100, 3, 2)]  // slices of 48, 48 and 4 (whole 16-deep tiles; the last takes the rest): 2 launches
    [InlineData(64, 64, 48, 2, 2)]   // 32 and 16
    [InlineData(5, 7, 33, 4, 2)]     // 16, 16 and 1: fewer slices than asked
    [InlineData(20, 24, 64, 2, 1)]   // 32 and 32: equal slices run side by side in one launch
    [InlineData(13, 9, 96, 3, 1)]    // 32, 32 and 32
    [InlineData(9, 3, 12, 2, 1)]     // K under one tile: one slice, the plain path
    public void SplitKMatchesReference(int m, int n, int k, int slices, int launchesPerProduct)
    {
        // K cut into slices, each a product into its own partial, then the partials added in order and scaled:
        // every transposition, beta 0 (C not read) and beta ≠ 0, padded leading dimensions and offsets.
        var b = G;
        Assert.True(b.SupportsLargeGemm, "the 256-thread kernels are not supported here");
        b.ForcedSplitK = slices;
        try
        {
            long before = b.LaunchesByKernel.GetValueOrDefault("splitKSum");
            long gemmsBefore = b.LaunchesByKernel.GetValueOrDefault("sgemm64");
            Check(m, n, k, 1, betas: [0.0, 0.5]);
            long sums = b.LaunchesByKernel.GetValueOrDefault("splitKSum") - before;
            Assert.Equal(k > 16 ? 8 : 0, sums); // one sum per product (4 transpositions × 2 betas) when K was split
            if (k > 16) Assert.Equal(8 * launchesPerProduct, b.LaunchesByKernel.GetValueOrDefault("sgemm64") - gemmsBefore);
        }
        finally
        {
            b.ForcedSplitK = null;
        }
    }

    [Fact]
    public void AutoSplitsOnlyALongKOverTooFewTiles()
    {
        // An H100-sized device (132 SMs): a router gate's weight gradient [8, 512] over 4096 tokens has 8 tiles of
        // 64×64, so K goes in 8 slices of 512 (4096 / 512 caps it below 132 / 8 = 16).
        Assert.Equal(8, IlgpuBackend.SplitKSlicesFor(8, 512, 4096, 1, 132));
        Assert.Equal(16, IlgpuBackend.SplitKSlicesFor(8, 512, 65536, 1, 132));   // then the SMs cap it
        Assert.Equal(1, IlgpuBackend.SplitKSlicesFor(8, 512, 1024, 1, 132));     // K too short to pay for the sum
        Assert.Equal(1, IlgpuBackend.SplitKSlicesFor(512, 1024, 4096, 1, 132));  // 128 tiles: the SMs are busy
        Assert.Equal(1, IlgpuBackend.SplitKSlicesFor(8, 512, 4096, 2, 132));     // batches keep one launch
        Assert.Equal(1, IlgpuBackend.SplitKSlicesFor(8, 512, 4096, 1, 1));       // the emulator's one SM
    }

    private void WithKernel(GemmKernelChoice choice, Action body)
    {
        var b = G;
        // Every ILGPU device here (the emulator, any CUDA GPU) runs 256-thread groups: Large must not fall back silently.
        if (choice != GemmKernelChoice.Tiled) Assert.True(b.SupportsLargeGemm, "the 256-thread kernels are not supported here");
        b.GemmKernel = choice;
        try
        {
            body();
        }
        finally
        {
            b.GemmKernel = GemmKernelChoice.Auto;
        }
    }

    private void Check(int m, int n, int k, int batch, double[] betas)
    {
        var rng = new Random(m * 1000 + n * 10 + k + batch);
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                foreach (double beta in betas)
                {
                    int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
                    int rowsA = ta ? k : m, rowsB = tb ? n : k;
                    int strideA = rowsA * lda + 1, strideB = batch > 1 && rng.Next(2) == 0 ? 0 : rowsB * ldb, strideC = m * ldc + 5;
                    var a = K.Rand(3 + strideA * batch, rng.Next());
                    var bm = K.Rand(1 + Math.Max(strideB * batch, rowsB * ldb), rng.Next());
                    var c = K.Rand(5 + strideC * batch, rng.Next());
                    if (beta == 0) c[5 + (m - 1) * ldc + n - 1] = float.NaN; // beta = 0 must overwrite, not read
                    var ce = K.S(c);
                    Ref.Gemm(ta, tb, m, n, k, 1.5, K.S(a), 3, lda, strideA, K.S(bm), 1, ldb, strideB, beta, ce, 5, ldc, strideC, batch);
                    var cg = UpG(c);
                    G.Gemm(ta, tb, m, n, k, 1.5, UpG(a), 3, lda, strideA, UpG(bm), 1, ldb, strideB, beta, cg, 5, ldc, strideC, batch);
                    K.Close(K.F(ce), DownG(cg), 1e-5 * Slack, 2e-6 * Math.Max(1, k) * Slack,
                        $"gemm {m}x{n}x{k} ta={ta} tb={tb} beta={beta} batch={batch} kernel={G.GemmKernel}");
                }
    }
}
