using PureMoE.Backends;
using PureMoE.Backends.Ilgpu;
using PureMoE.Engine.Tests.Backends;
using PureMoE.Optim;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>The multi-tensor kernels on ILGPU's CPU accelerator (16-thread groups).</summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class IlgpuCpuForeachTests : IlgpuForeachTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.IlgpuCpu;
}

/// <summary>The same on the emulator shaped like a CUDA GPU (256-thread groups: the chunk size CUDA gets).</summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class CudaShapedForeachTests : IlgpuForeachTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.IlgpuCpu;

    /// <inheritdoc />
    protected override bool CudaShaped => true;
}

/// <summary>The same on CUDA device 0; skipped where there is none.</summary>
[Trait("Device", "Cuda")]
[Collection("Ilgpu")]
public sealed class CudaForeachTests : IlgpuForeachTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.Cuda;
}

/// <summary>
/// The multi-tensor ("foreach") primitives of the ILGPU backend, which pass up to 16 tensors to one launch as a
/// struct of views: SumOfSquares against a float64 sum, ScaleInPlace and the multi-tensor AdamW bit for bit against
/// the single-tensor kernels, with 1, 3 and 17 tensors (17 takes two launches), empty tensors among them, lengths
/// that are not multiples of the chunk (16 group sizes) and buffers longer than the tensor (the rest must stay
/// untouched). Then GradClip.ClipGradNormOnDevice against the CPU's ClipGradNorm.
/// </summary>
public abstract class IlgpuForeachTests : IlgpuTestBase
{
    /// <summary>Tensor lengths per case: around and across the chunk size of both emulators (256 and 4096 elements).</summary>
    public static TheoryData<int[]> Cases => new()
    {
        { [1] },
        { [0, 300, 4097] },
        { [5, 0, 256, 257, 17, 1, 4096, 33, 2, 0, 9000, 64, 3, 7, 255, 1000, 4] },
    };

    /// <summary>Random buffers one element longer than each length (the extra element must not change).</summary>
    private static float[][] Buffers(int[] lengths, int seed, float lo = -3, float hi = 3) =>
        lengths.Select((n, i) => K.Rand(n + 1, seed * 100 + i, lo, hi)).ToArray();

    private static BufferSlice[] Slices(Storage[] storages, int[] lengths) =>
        storages.Select((s, i) => new BufferSlice(s, lengths[i])).ToArray();

    private static int Launches(int[] lengths) => (lengths.Count(n => n > 0) + GroupOperands.Count - 1) / GroupOperands.Count;

    [Theory]
    [MemberData(nameof(Cases))]
    public void SumOfSquaresMatchesFloat64(int[] lengths)
    {
        var data = Buffers(lengths, 1);
        double expected = 0;
        for (int t = 0; t < lengths.Length; t++)
            for (int i = 0; i < lengths[t]; i++) expected += (double)data[t][i] * data[t][i];
        var storages = data.Select(Up).ToArray();
        var result = Up(new[] { float.NaN });

        long before = B.Launches;
        B.SumOfSquares(Slices(storages, lengths), result);
        // One launch per 16 tensors, then one reduction of the partial sums.
        Assert.Equal(Launches(lengths) + 1, B.Launches - before);
        float first = DownF(result)[0];
        Assert.Equal(expected, first, expected * 1e-5 * Slack);

        B.SumOfSquares(Slices(storages, lengths), result);
        Assert.Equal(BitConverter.SingleToInt32Bits(first), BitConverter.SingleToInt32Bits(DownF(result)[0])); // same bits again
    }

    [Fact]
    public void SumOfSquaresOfNothingIsZero()
    {
        var result = Up(new[] { float.NaN });
        B.SumOfSquares([], result);
        Assert.Equal(0f, DownF(result)[0]);
        B.SumOfSquares([new BufferSlice(Up(new[] { 5f }), 0)], result);
        Assert.Equal(0f, DownF(result)[0]);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ScaleInPlaceIsAMulInPlace(int[] lengths)
    {
        var data = Buffers(lengths, 2);
        var storages = data.Select(Up).ToArray();
        long before = B.Launches;
        B.ScaleInPlace(Slices(storages, lengths), Up(new[] { 0.37f }));
        Assert.Equal(Launches(lengths), B.Launches - before);
        for (int t = 0; t < lengths.Length; t++)
        {
            var expected = (float[])data[t].Clone();
            for (int i = 0; i < lengths[t]; i++) expected[i] *= 0.37f;
            K.SameBits(expected, DownF(storages[t]), $"tensor {t} of {lengths.Length} (length {lengths[t]})");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MultiTensorAdamWMatchesTheSingleTensorKernelBitForBit(int[] lengths)
    {
        var p = Buffers(lengths, 3);
        var g = Buffers(lengths, 4);
        var m = Buffers(lengths, 5, -0.1f, 0.1f);
        var v = Buffers(lengths, 6, 0f, 0.1f);
        // Each parameter at its own step (some skipped steps without a gradient): own bias corrections.
        var steps = lengths.Select((_, i) => 1 + i % 4).ToArray();
        AdamWSlot Slot(Storage[] ps, Storage[] gs, Storage[] ms, Storage[] vs, int i) =>
            new(ps[i], gs[i], ms[i], vs[i], lengths[i], 1 - Math.Pow(0.9, steps[i]), 1 - Math.Pow(0.999, steps[i]));

        Storage[] p1 = p.Select(Up).ToArray(), g1 = g.Select(Up).ToArray(), m1 = m.Select(Up).ToArray(), v1 = v.Select(Up).ToArray();
        for (int i = 0; i < lengths.Length; i++)
        {
            var s = Slot(p1, g1, m1, v1, i);
            B.AdamW(s.Param, s.Grad, s.M, s.V, s.Length, 1e-3, 0.9, 0.999, 1e-8, 0.1, s.BiasCorrection1, s.BiasCorrection2);
        }

        Storage[] p2 = p.Select(Up).ToArray(), g2 = g.Select(Up).ToArray(), m2 = m.Select(Up).ToArray(), v2 = v.Select(Up).ToArray();
        long before = B.Launches;
        B.AdamW(lengths.Select((_, i) => Slot(p2, g2, m2, v2, i)).ToArray(), 1e-3, 0.9, 0.999, 1e-8, 0.1);
        Assert.Equal(Launches(lengths), B.Launches - before);

        for (int i = 0; i < lengths.Length; i++)
        {
            K.SameBits(DownF(p1[i]), DownF(p2[i]), $"param {i} (length {lengths[i]}, step {steps[i]})");
            K.SameBits(DownF(m1[i]), DownF(m2[i]), $"m {i}");
            K.SameBits(DownF(v1[i]), DownF(v2[i]), $"v {i}");
            Assert.Equal(p[i][^1], DownF(p2[i])[^1]); // past the tensor: untouched
        }
    }

    /// <summary>Parameters with gradients on <paramref name="device"/>: 17 of them (two launches of 16 on a GPU).</summary>
    private static List<Tensor> WithGradients(Device device, float scale)
    {
        var parameters = new List<Tensor>();
        for (int i = 0; i < 17; i++)
        {
            int n = 1 + (i * 37) % 300;
            var p = Tensor.FromArray(K.Rand(n, 10 + i), [n]).To(device);
            p.RequiresGrad = true;
            p.MulScalar(scale).Square().Sum().Backward(); // grad = 2·scale²·p
            parameters.Add(p);
        }
        return parameters;
    }

    [Theory]
    [InlineData(4f, 1.0)]              // norm 2 above max 1: about 0.5
    [InlineData(0f, 1.0)]              // norm 0: the coefficient is capped at exactly 1
    [InlineData(2.5e-3f, 0.05)]        // norm just at max: 1, or just below it
    [InlineData(1e30f, 1.0)]           // a huge norm: a tiny coefficient
    [InlineData(float.PositiveInfinity, 1.0)]
    [InlineData(float.NaN, 1.0)]       // NaN stays NaN (the gradients then show it)
    public void ClipCoefficientIsTheHostFormulaBitForBit(float sumSquares, double maxNorm)
    {
        IBackend host = K.Cpu;
        var (hostNorm, hostCoef) = (K.S(new[] { float.NaN }), K.S(new[] { float.NaN }));
        host.ClipCoefficient(K.S(new[] { sumSquares }), maxNorm, hostNorm, hostCoef);
        var (norm, coef) = (Up(new[] { float.NaN }), Up(new[] { float.NaN }));
        long before = B.Launches;
        B.ClipCoefficient(Up(new[] { sumSquares }), maxNorm, norm, coef);
        Assert.Equal(1, B.Launches - before);
        float c = DownF(coef)[0];
        if (float.IsNaN(sumSquares))
        {
            // A NaN's bits are the hardware's own (x86 makes 0xFFC00000, a CUDA GPU 0x7FFFFFFF): only NaN-ness is the formula's.
            Assert.True(float.IsNaN(DownF(norm)[0]) && float.IsNaN(c), $"norm {DownF(norm)[0]}, coefficient {c}: NaN expected");
            return;
        }
        K.SameBits(K.F(hostNorm), DownF(norm), "norm");
        K.SameBits(K.F(hostCoef), DownF(coef), "coefficient");
        Assert.InRange(c, 0f, 1f);
    }

    [Theory]
    [InlineData(0.3f, 1.0)]    // norm above max: every gradient scaled
    [InlineData(0.01f, 100.0)] // norm below max: gradients unchanged, bit for bit
    public void ClipGradNormOnDeviceMatchesTheCpu(float scale, double maxNorm)
    {
        var cpu = WithGradients(Device.Cpu, scale);
        var dev = WithGradients(Dev, scale);
        var gradsBefore = dev.Select(p => p.Grad!.ToArray<float>()).ToList();
        double expectedNorm = GradClip.ClipGradNorm(cpu, maxNorm);

        var norm = GradClip.ClipGradNormOnDevice(dev, maxNorm)!;
        Assert.Equal(expectedNorm, norm.Item(), expectedNorm * 1e-5 * Slack);
        for (int i = 0; i < cpu.Count; i++)
        {
            var got = dev[i].Grad!.ToArray<float>();
            if (expectedNorm <= maxNorm) K.SameBits(gradsBefore[i], got, $"gradient {i}");
            else K.Close(cpu[i].Grad!.ToArray<float>(), got, 1e-5 * Slack, 1e-7, $"gradient {i}");
        }
    }
}
