using ILGPU.Backends.OpenCL;
using ILGPU.Runtime;
using ILGPU.Runtime.OpenCL;
using PureMoE.Backends.Ilgpu;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>
/// OpenCL without an OpenCL device: ILGPU's CLBackend is public and compiles a kernel to OpenCL C source given a
/// context and a capability description, no accelerator needed. This generates OpenCL C 2.0 for every kernel of
/// the backend (every op struct and element type) and checks the source names the entry point. Running the
/// kernels needs an OpenCL 2.0 device with the generic address space (Debian's PoCL here lacks it).
/// </summary>
[Trait("Device", "OpenCL")]
[Collection("Ilgpu")]
public sealed class IlgpuOpenCLTests
{
    [Fact]
    public void EveryKernelCompilesToOpenCLC()
    {
        var entries = IlgpuKernelCatalog.All();
        Assert.True(entries.Count >= 50, $"only {entries.Count} kernels in the catalog");
        var backend = new CLBackend(IlgpuDevices.Context,
            new CLCapabilityContext(true, true, true, true, true), CLDeviceVendor.Other, CLCVersion.CL20);
        var failures = new List<string>();
        foreach (var e in entries)
        {
            try
            {
                var compiled = (CLCompiledKernel)backend.Compile(e.Description, KernelSpecialization.Empty);
                Assert.Contains("kernel", compiled.Source);
                Assert.Contains(e.Method.Name, compiled.Source);
                // PUREMOE_DUMP_OPENCL=dir writes each kernel's OpenCL C there, to read or to build with another compiler.
                if (Environment.GetEnvironmentVariable("PUREMOE_DUMP_OPENCL") is { Length: > 0 } dir)
                {
                    Directory.CreateDirectory(dir);
                    File.WriteAllText(Path.Combine(dir, string.Concat(e.Name.Split('<', '>', ',')) + ".cl"), compiled.Source);
                }
            }
            catch (Exception ex)
            {
                failures.Add($"{e.Name}: {ex.GetType().Name}: {ex.Message}");
            }
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public void CatalogCoversEveryKernelMethod()
    {
        var names = IlgpuKernelCatalog.All().Select(e => e.Method.Name).ToHashSet();
        foreach (var expected in new[] { "Unary", "Binary", "WhereFloatCond", "WhereLongCond", "Fill", "CopyStrided", "CopyFloatToLong",
                     "CopyLongToFloat", "ReduceRows", "ReduceColumns", "Softmax", "SoftmaxBackward", "RmsNorm", "RmsNormBackwardDx",
                     "RmsNormBackwardDw", "IndexSelect", "Gather", "IndexAddFloat", "IndexAddLong", "ScatterAddFloat", "ScatterAddLong",
                     "IndexAddKeys", "IndexAddRowStarts", "IndexAddSortedFloat", "IndexAddSortedLong",
                     "TopK", "ArgSortFloat", "ArgSortLong", "ArgSortKeysFloat", "ArgSortKeysLong", "ArgSortRowKeys", "ArgSortColumns",
                     "Rope", "AdamW", "Sgemm", "SwiGlu", "SwiGluBackward", "WeightedGatherSum",
                     "WeightedGatherSumBackward" })
            Assert.Contains(expected, names);
        Assert.Equal(Enum.GetValues<PureMoE.Backends.UnaryOp>().Length, IlgpuKernelCatalog.All().Count(e => e.Method.Name == "Unary"));
        Assert.Equal(Enum.GetValues<PureMoE.Backends.BinaryOp>().Length, IlgpuKernelCatalog.All().Count(e => e.Method.Name == "Binary"));
    }

    [Fact]
    public void OpenCLDeviceIsUsedWhenPresentAndAClearErrorOtherwise()
    {
        int count = IlgpuDevices.OpenCLCount;
        if (count == 0)
        {
            var e = Assert.Throws<InvalidOperationException>(() => Device.OpenCL(0));
            Assert.Contains("OpenCL", e.Message);
            return;
        }
        var t = Tensor.FromArray([1f, 2f, 3f]).To(Device.OpenCL(0));
        Assert.Equal(new[] { 2f, 4f, 6f }, t.Add(t).ToArray<float>());
    }
}
