using System.Reflection;
using System.Reflection.Emit;
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

    /// <summary>The order TopK and ArgSort used before the H200 run showed the fault (NaN largest, ties by index).</summary>
    public static bool BeforeAsItWas(float a, int ia, float b, int ib, bool descending)
    {
        bool an = float.IsNaN(a), bn = float.IsNaN(b);
        int c = an || bn ? (an == bn ? 0 : an ? 1 : -1) : a < b ? -1 : a > b ? 1 : 0;
        if (descending) c = -c;
        return c < 0 || (c == 0 && ia < ib);
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
    public void TheIlShapeIsFoundInTheCanaryAndNowhereInTheBackend()
    {
        // The detector sees the canary's expression, and not its statements...
        Assert.NotEmpty(IlShape.ConstantBesideAComparison(typeof(QuirkKernels).GetMethod(nameof(QuirkKernels.ThreeWayExpression))!));
        Assert.Empty(IlShape.ConstantBesideAComparison(typeof(QuirkKernels).GetMethod(nameof(QuirkKernels.ThreeWayStatements))!));
        var beforeAsItWas = typeof(QuirkKernels).GetMethod(nameof(QuirkKernels.BeforeAsItWas))!;
        Assert.True(IlShape.ConstantBesideAComparison(beforeAsItWas).Count > 0, IlShape.Listing(beforeAsItWas));
        Assert.Empty(IlShape.ConstantBesideAComparison(typeof(IlgpuKernels).GetMethod(nameof(IlgpuKernels.Before), [typeof(float), typeof(int), typeof(float), typeof(int), typeof(bool)])!));
        // ...and no method of the ILGPU backend's namespace (kernels, the helpers they call, the op structs) has it.
        var methods = typeof(IlgpuBackend).Assembly.GetTypes()
            .Where(t => t.Namespace == typeof(IlgpuBackend).Namespace)
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly))
            .ToList();
        Assert.True(methods.Count > 200, $"only {methods.Count} methods scanned");
        var found = methods.SelectMany(m => IlShape.ConstantBesideAComparison(m).Select(at => $"{m.DeclaringType!.Name}.{m.Name} at IL_{at:x4}")).ToList();
        Assert.True(found.Count == 0, "a constant other than 0 or 1 meets a comparison at a branch join, which ILGPU 1.5.3 " +
            "reads as ||: write it as boolean tests or if/else statements\n" + string.Join("\n", found));
    }

    [Fact]
    public void CompiledTheStatementsKeepTheirMinusOne()
    {
        Assert.Contains("4294967295", Ptx(nameof(QuirkKernels.ThreeWayStatements)));
        string c = OpenClC(nameof(QuirkKernels.ThreeWayStatements));
        Assert.True(c.Contains("-1") || c.Contains("4294967295") || c.Contains("0xFFFFFFFF", StringComparison.OrdinalIgnoreCase), c);
    }
}

/// <summary>
/// Finds, in a method's IL, the shape ILGPU 1.5.3 misreads (see <see cref="IlgpuCompilerQuirkTests"/>): arms of a
/// conditional that meet at one join, one ending with a comparison (ceq, cgt, clt and their .un forms) and another
/// with a constant other than 0 and 1 — what C# emits for <c>x &lt; y ? -1 : x &gt; y ? 1 : 0</c>.
/// </summary>
internal static class IlShape
{
    private static readonly Dictionary<short, OpCode> Codes = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    private readonly record struct Instruction(int Offset, OpCode Code, long Operand, int Next);

    /// <summary>The IL offsets of the misread constants in <paramref name="method"/> (empty when none).</summary>
    public static List<int> ConstantBesideAComparison(MethodBase method)
    {
        var il = method.GetMethodBody()?.GetILAsByteArray();
        var found = new List<int>();
        if (il is null) return found;
        var code = Decode(il);
        var index = code.Select((c, i) => (c.Offset, i)).ToDictionary(p => p.Offset, p => p.i);
        // Each join (the target of an unconditional jump) and the last instruction of every arm that reaches it: the
        // one before each jump there, and the one before the join itself when it falls through.
        var arms = new Dictionary<int, List<Instruction>>();
        void Arm(int join, Instruction last)
        {
            if (!arms.TryGetValue(join, out var list)) arms[join] = list = [];
            list.Add(last);
        }
        for (int i = 1; i < code.Count; i++)
            if (IsJump(code[i]) && index.TryGetValue((int)code[i].Operand, out int join))
            {
                Arm(join, code[i - 1]);
                if (join >= 1 && code[join - 1] is var before && !IsJump(before)
                    && before.Code.FlowControl is not FlowControl.Return and not FlowControl.Throw)
                    Arm(join, before);
            }
        foreach (var list in arms.Values)
            if (list.Any(IsComparison))
                found.AddRange(list.Where(c => IsOddConstant(c, out _)).Select(c => c.Offset));
        return found.Distinct().Order().ToList();
    }

    /// <summary>A method's IL as text, an instruction a line (for failure messages).</summary>
    public static string Listing(MethodBase method) =>
        string.Join("\n", Decode(method.GetMethodBody()!.GetILAsByteArray()!).Select(c => $"IL_{c.Offset:x4}: {c.Code.Name} {c.Operand}"));

    private static bool IsJump(Instruction c) => c.Code == OpCodes.Br || c.Code == OpCodes.Br_S;

    private static bool IsComparison(Instruction c) =>
        c.Code == OpCodes.Ceq || c.Code == OpCodes.Cgt || c.Code == OpCodes.Cgt_Un || c.Code == OpCodes.Clt || c.Code == OpCodes.Clt_Un;

    private static bool IsOddConstant(Instruction c, out long value)
    {
        value = c.Code.Value switch
        {
            0x15 => -1,                                   // ldc.i4.m1
            >= 0x16 and <= 0x1E => c.Code.Value - 0x16,   // ldc.i4.0 … ldc.i4.8
            0x1F or 0x20 or 0x21 => c.Operand,            // ldc.i4.s, ldc.i4, ldc.i8
            _ => 0,
        };
        return value is not 0 and not 1;
    }

    private static List<Instruction> Decode(byte[] il)
    {
        var result = new List<Instruction>();
        int i = 0;
        while (i < il.Length)
        {
            int start = i;
            short value = il[i] == 0xFE ? (short)(0xFE00 | il[i + 1]) : il[i];
            var op = Codes[value];
            i += op.Size;
            long operand = 0;
            switch (op.OperandType)
            {
                case OperandType.InlineNone: break;
                case OperandType.ShortInlineI: operand = (sbyte)il[i]; i += 1; break;
                case OperandType.ShortInlineVar: i += 1; break;
                case OperandType.ShortInlineBrTarget: operand = i + 1 + (sbyte)il[i]; i += 1; break;
                case OperandType.InlineVar: i += 2; break;
                case OperandType.InlineI8: operand = BitConverter.ToInt64(il, i); i += 8; break;
                case OperandType.InlineR: i += 8; break;
                case OperandType.InlineBrTarget: operand = i + 4 + BitConverter.ToInt32(il, i); i += 4; break;
                case OperandType.InlineSwitch: i += 4 + 4 * BitConverter.ToInt32(il, i); break;
                case OperandType.InlineI: operand = BitConverter.ToInt32(il, i); i += 4; break;
                default: i += 4; break;
            }
            result.Add(new Instruction(start, op, operand, i));
        }
        return result;
    }
}
