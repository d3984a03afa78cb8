using System.Runtime.InteropServices;
using PureMoE.Backends.Ilgpu;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>The resolver that lets ILGPU open the NVIDIA driver as libcuda.so.1 where libcuda.so is missing.</summary>
public sealed class CudaDriverLoaderTests
{
    [Fact]
    public void AnswersIlgpusCudaImportWithTheFirstDriverNameThatLoads()
    {
        var tried = new List<string>();
        IntPtr OnlyVersioned(string name)
        {
            tried.Add(name);
            return name == "libcuda.so.1" ? 42 : IntPtr.Zero;
        }
        Assert.Equal(42, CudaDriverLoader.Resolve("cuda", linux: true, OnlyVersioned));
        Assert.Equal(["libcuda.so", "libcuda.so.1"], tried);

        // The plain name wins where it loads (the driver's development package is installed).
        Assert.Equal(7, CudaDriverLoader.Resolve("cuda", linux: true, name => name == "libcuda.so" ? 7 : 42));
        // No driver: default probing (which fails as before, and ILGPU reports no CUDA device).
        Assert.Equal(IntPtr.Zero, CudaDriverLoader.Resolve("cuda", linux: true, _ => IntPtr.Zero));
        // Other libraries and other systems are left alone.
        Assert.Equal(IntPtr.Zero, CudaDriverLoader.Resolve("nvcuda", linux: false, _ => 42));
        Assert.Equal(IntPtr.Zero, CudaDriverLoader.Resolve("cuda", linux: false, _ => 42));
        Assert.Equal(IntPtr.Zero, CudaDriverLoader.Resolve("OpenCL", linux: true, _ => 42));
    }

    [Fact]
    public void IsInstalledOnIlgpuBeforeItsFirstContext()
    {
        _ = IlgpuDevices.Context;
        // A second resolver for the same assembly is refused: the one the context's creation installed is there.
        Assert.Throws<InvalidOperationException>(() =>
            NativeLibrary.SetDllImportResolver(typeof(ILGPU.Context).Assembly, (_, _, _) => IntPtr.Zero));
    }
}
