using PureMoE.Backends.Ilgpu;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>The hint Device.Cuda adds when no CUDA device shows because the driver is there as libcuda.so.1 only.</summary>
public sealed class CudaDriverHintTests
{
    [Fact]
    public void NamesTheSymlinkOnlyWhenTheVersionedDriverLoadsAndThePlainNameDoesNot()
    {
        string hint = IlgpuDevices.CudaDriverHint(plainLoads: false, versionedLoads: true);
        Assert.Contains("libcuda.so.1 only", hint);
        Assert.Contains("ln -s", hint);
        Assert.Contains("LD_LIBRARY_PATH", hint);
        Assert.Equal("", IlgpuDevices.CudaDriverHint(plainLoads: true, versionedLoads: true));   // ILGPU found the driver
        Assert.Equal("", IlgpuDevices.CudaDriverHint(plainLoads: false, versionedLoads: false)); // no driver at all
    }
}
