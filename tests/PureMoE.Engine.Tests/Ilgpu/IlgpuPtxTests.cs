using System.Text.RegularExpressions;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using PureMoE.Backends.Ilgpu;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>
/// PTX without a GPU: ILGPU's PTXBackend compiles a kernel to PTX given a context and a target architecture, no
/// driver needed. This checks what decides the large SGEMM kernel's speed on an H100 (sm_90) before any GPU run:
/// its 64 accumulators and staged values stay in registers (no local memory), its shared-memory reads are 16-byte
/// vector loads, and its inner loop is the unrolled 8×8 outer product (64 fused multiply-adds per k).
/// PUREMOE_DUMP_PTX=dir writes the PTX there (to read, or to feed ptxas -v on a machine that has it).
/// </summary>
[Trait("Device", "Ptx")]
[Collection("Ilgpu")]
public sealed class IlgpuPtxTests
{
    private static string Ptx(string method)
    {
        var m = typeof(IlgpuKernelCatalog).Assembly.GetType("PureMoE.Backends.Ilgpu.IlgpuKernels")!
            .GetMethod(method, System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Static)!;
        using var backend = new PTXBackend(IlgpuDevices.Context, CudaArchitecture.SM_90, CudaInstructionSet.ISA_85, null!);
        var compiled = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(m), KernelSpecialization.Empty);
        if (Environment.GetEnvironmentVariable("PUREMOE_DUMP_PTX") is { Length: > 0 } dir)
        {
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, method + ".ptx"), compiled.PTXAssembly);
        }
        return compiled.PTXAssembly;
    }

    [Fact]
    public void LargeSgemmKeepsItsRegisterBlockInRegisters()
    {
        string ptx = Ptx("Sgemm128");
        Assert.DoesNotContain("ld.local", ptx);
        Assert.DoesNotContain("st.local", ptx);
        Assert.DoesNotContain(".local", ptx);
        // Per k: two 16-byte reads of A and two of B, then 64 multiply-adds (ptxas contracts mul + add to FFMA).
        Assert.Equal(4, Regex.Count(ptx, @"ld\.shared\.v4\.f32"));
        Assert.True(Regex.Count(ptx, @"\bmul(\.rn)?\.f32") >= 64);
        Assert.Contains(".target sm_", ptx);
    }

    [Fact]
    public void TiledSgemmCompilesToPtx() => Assert.Contains("bar.sync", Ptx("Sgemm"));
}
