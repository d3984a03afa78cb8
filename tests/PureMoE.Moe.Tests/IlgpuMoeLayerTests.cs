using PureMoE.Backends.Ilgpu;
using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Tests;

/// <summary>ILGPU tests of this assembly run one at a time (a device is used from one thread at a time).</summary>
[CollectionDefinition("Ilgpu", DisableParallelization = true)]
public sealed class IlgpuCollection;

/// <summary>The MoE layer on ILGPU's CPU accelerator (the GPU emulator).</summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class IlgpuCpuMoeLayerTests : IlgpuMoeLayerTests
{
    /// <inheritdoc />
    protected override Device Dev => Device.IlgpuCpu;
}

/// <summary>The same on CUDA device 0; skipped where there is none.</summary>
[Trait("Device", "Cuda")]
[Collection("Ilgpu")]
public sealed class CudaMoeLayerTests : IlgpuMoeLayerTests
{
    /// <inheritdoc />
    protected override Device Dev
    {
        get
        {
            int count = 0;
            try { count = IlgpuDevices.CudaCount; } catch (Exception) { count = 0; }
            Assert.SkipUnless(count > 0, "no CUDA device on this machine");
            return Device.Cuda(0);
        }
    }
}

/// <summary>
/// A Mixtral-style MoE layer (TopKRouter, softmax-renormalised top-2, dropless, with the training aux loss) forward and
/// backward on an ILGPU device against the same layer on Device.Cpu: the routing's host-built tensors (keep mask,
/// expert counts) must be float32, the only floating type ILGPU devices hold.
/// </summary>
public abstract class IlgpuMoeLayerTests
{
    /// <summary>The device under test.</summary>
    protected abstract Device Dev { get; }

    private static MoeLayer Layer() => new(8, 12, new TopKRouter(4, new TopKOptions
    {
        K = 2, Normalization = TopKNormalization.SoftmaxRenorm, CapacityFactor = null, AuxLossCoeff = 0.01,
    }), new Rng(5), 0.3);

    [Fact]
    public void TopKLayerForwardAndBackwardMatchCpu()
    {
        var dev = Dev;
        var cpu = Layer();
        var gpu = Layer();
        gpu.To(dev);
        var x = Tensor.Randn(new Shape(10, 8), new Rng(6));
        var gy = Tensor.Randn(new Shape(10, 8), new Rng(7));
        var xc = x.Detach();
        xc.RequiresGrad = true;
        var xg = x.To(dev).Detach();
        xg.RequiresGrad = true;

        var yc = cpu.Forward(xc);
        var yg = gpu.Forward(xg);
        yc.Backward(gy);
        yg.Backward(gy.To(dev));

        Close(yc.ToFloatArray(), yg.ToFloatArray(), "y");
        Close(xc.Grad!.ToFloatArray(), xg.Grad!.ToFloatArray(), "dx");
        foreach (var (pc, pg) in cpu.Parameters().Zip(gpu.Parameters()))
            Close(pc.Grad!.ToFloatArray(), pg.Grad!.ToFloatArray(), $"d{pc.Name}");
        Assert.Equal(cpu.LastPlan!.Expert, gpu.LastPlan!.Expert);
        Assert.Equal(cpu.LastPlan.AuxLoss!.Item(), gpu.LastPlan.AuxLoss!.Item(), 1e-6);
    }

    private static void Close(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5 + 1e-4 * Math.Abs(expected[i]),
                $"{what}[{i}]: expected {expected[i]}, got {actual[i]}");
    }
}
