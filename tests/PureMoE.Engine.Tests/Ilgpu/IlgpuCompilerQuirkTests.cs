using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.OpenCL;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;
using PureMoE.Backends.Ilgpu;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>Canary kernels for <see cref="IlgpuCompilerQuirkTests"/>.</summary>
public static class QuirkKernels
{
    /// <summary>A three-way comparison as a conditional expression: what TopK and ArgSort once used.</summary>
    public static void ThreeWayExpression(Index1D i, ArrayView<float> x, ArrayView<int> o)
    {
        float a = x[2 * i], b = x[2 * i + 1];
        o[i] = a < b ? -1 : a > b ? 1 : 0;
    }

    /// <summary>The same comparison as if/else statements.</summary>
    public static void ThreeWayStatements(Index1D i, ArrayView<float> x, ArrayView<int> o)
    {
        float a = x[2 * i], b = x[2 * i + 1];
        int c;
        if (a < b) c = -1;
        else if (a > b) c = 1;
        else c = 0;
        o[i] = c;
    }
}

/// <summary>
/// A fault of ILGPU 1.5.3 that the first GPU run found (an H200, 2026-12-04) and the emulator cannot: for
/// <c>a &lt; b ? -1 : a &gt; b ? 1 : 0</c> C# emits a branch, the comparison <c>cgt</c> on one arm and the constant −1 on
/// the other, and ILGPU's IL reader takes that shape for a short-circuit <c>||</c>, so the constant becomes
/// <c>true</c>: the kernel computes <c>(a &lt; b || a &gt; b) ? 1 : 0</c>. Any constant other than 0 and 1 beside a
/// comparison is read so (2 becomes 1 too). The IR is shared, so PTX and OpenCL C both have it; ILGPU's CPU
/// accelerator runs the IL itself and gets −1. Our kernels write such comparisons as boolean tests
/// (<see cref="IlgpuKernels.Before(float, int, float, int, bool)"/>); these tests hold what each form compiles to,
/// so an ILGPU upgrade that fixes the reader shows here.
/// </summary>
[Collection("Ilgpu")]
public sealed class IlgpuCompilerQuirkTests
{
    private static readonly float[] Pairs = [0f, 1f, 1f, 0f, 2f, 2f]; // a < b, a > b, a == b

    private static EntryPointDescription Entry(string name) =>
        EntryPointDescription.FromImplicitlyGroupedKernel(typeof(QuirkKernels).GetMethod(name)!);

    private static string Ptx(string name) =>
        ((PTXCompiledKernel)new PTXBackend(IlgpuDevices.Context, CudaArchitecture.SM_90, CudaInstructionSet.ISA_85, nvvmAPI: null!)
            .Compile(Entry(name), KernelSpecialization.Empty)).PTXAssembly;

    private static string OpenClC(string name) =>
        ((CLCompiledKernel)new CLBackend(IlgpuDevices.Context, new CLCapabilityContext(true, true, true, true, true),
            CLDeviceVendor.Other, CLCVersion.CL20).Compile(Entry(name), KernelSpecialization.Empty)).Source;

    [Theory]
    [InlineData(nameof(QuirkKernels.ThreeWayExpression))]
    [InlineData(nameof(QuirkKernels.ThreeWayStatements))]
    public void TheEmulatorRunsTheIlAndGetsMinusOne(string name)
    {
        var accelerator = ((IlgpuBackend)Device.IlgpuCpu.Backend).Accelerator;
        var kernel = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>>(
            typeof(QuirkKernels).GetMethod(name)!.CreateDelegate<Action<Index1D, ArrayView<float>, ArrayView<int>>>());
        using var x = accelerator.Allocate1D(Pairs);
        using var o = accelerator.Allocate1D<int>(3);
        kernel(3, x.View, o.View);
        Assert.Equal([-1, 1, 0], o.GetAsArray1D());
    }

    [Fact]
    public void CompiledTheExpressionLosesItsMinusOne()
    {
        // PTX: the two comparisons are or-ed and the result selected as 1 or 0; −1 (4294967295) appears nowhere.
        string ptx = Ptx(nameof(QuirkKernels.ThreeWayExpression));
        Assert.Contains("or.pred", ptx);
        Assert.Contains("selp.b32", ptx);
        Assert.DoesNotContain("4294967295", ptx);
        Assert.DoesNotContain("-1", ptx.Split('\n').Where(l => !l.TrimStart().StartsWith("//")).Aggregate("", string.Concat));
        // OpenCL C comes from the same IR: `(a < b | a > b) ? 1 : 0`, no −1 there either.
        string c = OpenClC(nameof(QuirkKernels.ThreeWayExpression));
        Assert.DoesNotContain("-1", c);
        Assert.DoesNotContain("4294967295", c);
    }

    [Fact]
    public void CompiledTheStatementsKeepTheirMinusOne()
    {
        Assert.Contains("4294967295", Ptx(nameof(QuirkKernels.ThreeWayStatements)));
        string c = OpenClC(nameof(QuirkKernels.ThreeWayStatements));
        Assert.True(c.Contains("-1") || c.Contains("4294967295") || c.Contains("0xFFFFFFFF", StringComparison.OrdinalIgnoreCase), c);
    }
}
