using System.Diagnostics;
using System.Text.RegularExpressions;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using PureMoE.Backends.Ilgpu;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>
/// CUDA without a GPU: ILGPU's PTXBackend is public and compiles a kernel to PTX given an architecture and a PTX
/// instruction set, no device needed. This generates PTX for every kernel of the backend for the A100 (sm_80) and
/// the H100/H200 (sm_90), and, where NVIDIA's PTX assembler is present, assembles each one with
/// <c>ptxas -arch=sm_XX</c> — the check that the driver's JIT will accept it on a GPU. ISA 7.8 is the newest PTX
/// the CUDA 11.8 ptxas of Debian reads. ILGPU 1.5.3 writes <c>.target sm_80</c> for every architecture from sm_80
/// on, whatever the ISA (checked below at 7.8 and at 8.3, what a CUDA 12.3 driver gets); ptxas -arch=sm_90 then
/// builds that PTX for Hopper, which is what the driver's JIT does with it on an H100.
/// <c>bash scripts/install-ptxas.sh</c> puts ptxas under .tools/cuda/ (CI does this); PUREMOE_PTXAS names another.
/// </summary>
[Trait("Device", "Ptx")]
[Collection("Ilgpu")]
public sealed class IlgpuPtxTests
{
    public static TheoryData<int> Architectures => new() { 80, 90 };

    /// <summary>(sm, PTX ISA major, minor, the .target ILGPU writes).</summary>
    public static TheoryData<int, int, int, int> Generations => new()
    {
        { 80, 7, 8, 80 },
        { 90, 7, 8, 80 },
        { 90, 8, 3, 80 },
        { 90, 8, 8, 80 },   // what ILGPU 1.5.3 picks for sm_90 under a CUDA 13 driver (the lent H200s run 580.x)
    };

    private static CudaArchitecture Arch(int sm) => sm switch
    {
        80 => CudaArchitecture.SM_80,
        90 => CudaArchitecture.SM_90,
        _ => throw new ArgumentOutOfRangeException(nameof(sm)),
    };

    /// <summary>Every kernel's PTX for one architecture, by readable kernel name.</summary>
    private static List<(string Name, string Ptx)> CompileAll(int sm, int isaMajor = 7, int isaMinor = 8)
    {
        var backend = new PTXBackend(IlgpuDevices.Context, Arch(sm), new CudaInstructionSet(isaMajor, isaMinor), nvvmAPI: null!); // no NVVM: only libdevice math needs it
        var result = new List<(string, string)>();
        var failures = new List<string>();
        foreach (var e in IlgpuKernelCatalog.All())
        {
            try
            {
                string ptx = Ptx(backend, e);
                result.Add((e.Name, ptx));
                DumpIfAsked($"{e.Name}.sm{sm}.isa{isaMajor}{isaMinor}", ptx);
            }
            catch (Exception ex)
            {
                failures.Add($"{e.Name}: {ex.GetType().Name}: {ex.Message}");
            }
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        return result;
    }

    [Theory]
    [MemberData(nameof(Generations))]
    public void EveryKernelCompilesToPtx(int sm, int isaMajor, int isaMinor, int target)
    {
        var kernels = CompileAll(sm, isaMajor, isaMinor);
        Assert.True(kernels.Count >= 50, $"only {kernels.Count} kernels in the catalog");
        foreach (var (name, ptx) in kernels)
        {
            Assert.Contains($".version {isaMajor}.{isaMinor}", ptx);
            Assert.Contains($".target sm_{target}", ptx);
            Assert.Contains(".entry", ptx);
        }
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void EveryKernelAssemblesWithPtxas(int sm)
    {
        string? ptxas = FindPtxas();
        Assert.SkipWhen(ptxas is null, "ptxas not found: run `bash scripts/install-ptxas.sh` or set PUREMOE_PTXAS");
        var dir = Directory.CreateTempSubdirectory("puremoe-ptx-");
        try
        {
            var failures = new List<string>();
            var spills = new List<string>();
            foreach (var (name, ptx) in CompileAll(sm))
            {
                string file = Path.Combine(dir.FullName, string.Concat(name.Split('<', '>', ',')) + ".ptx");
                File.WriteAllText(file, ptx);
                var (exit, output) = Run(ptxas!, $"-arch=sm_{sm} -v -o /dev/null \"{file}\"");
                if (exit != 0) failures.Add($"{name}: ptxas exit {exit}: {output.Trim()}");
                // -v prints "N bytes spill stores, N bytes spill loads" per function; any spill in a kernel is a
                // performance bug (a register array ILGPU placed in local memory), reported rather than failed.
                foreach (var line in output.Split('\n'))
                    if (line.Contains("spill") && !line.Contains(" 0 bytes spill stores, 0 bytes spill loads"))
                        spills.Add($"{name}: {line.Trim()}");
            }
            Assert.True(failures.Count == 0, string.Join("\n", failures));
            TestContext.Current.SendDiagnosticMessage(spills.Count == 0
                ? $"sm_{sm}: every kernel assembled, no register spills"
                : $"sm_{sm}: spills in {spills.Count} kernels:\n" + string.Join("\n", spills));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    /// <summary>
    /// The approximate PTX math a kernel may use, and nothing coarser. ILGPU compiles XMath.Exp to
    /// <c>ex2.approx.f32</c> of x·log₂e and XMath.Log to <c>lg2.approx.f32</c> times ln 2: about 2 ulp, and an
    /// absolute 2^-22 in log₂ (float-level, what the CUDA test tolerances allow). It compiles XMath.Tanh to
    /// <c>tanh.approx.f32</c>, which is off by up to ~2^-11: the CPU emulator runs MathF.Tanh instead, so only a GPU
    /// would show it (tanh and GELU failing the CUDA tests at 5e-4). The kernels use <c>Act.Tanh</c>, from exp alone;
    /// this holds that no kernel brings an approximation back (sin, cos, rcp, rsqrt, sqrt and div .approx included).
    /// </summary>
    [Fact]
    public void KernelsUseOnlyFloatPrecisionApproximations()
    {
        string[] allowed = ["ex2.approx.f32", "lg2.approx.f32"];
        var found = new List<string>();
        foreach (var (name, ptx) in CompileAll(90, 8, 8))
            foreach (Match m in Regex.Matches(ptx, @"\b[a-z0-9]+\.approx(\.[a-z0-9]+)*"))
                if (!allowed.Contains(m.Value)) found.Add($"{name}: {m.Value}");
        Assert.True(found.Count == 0, "coarse approximations in kernels:\n" + string.Join("\n", found.Distinct()));
    }

    /// <summary>
    /// What decides the large SGEMM kernel's speed, checked in its PTX: its 64 accumulators and staged values stay in
    /// registers (no local memory), its shared-memory reads are 16-byte vector loads, and its K loop is the 8×8 outer
    /// product written out for the 8 steps of a staged tile: 32 vector loads and 8 × 64 multiply-adds (which ptxas
    /// contracts to FFMA). The grouped kernel shares the tile code and must keep all of it; the 64×64 kernel and its
    /// grouped twin have the same loop at a quarter of the width and twice the depth (32 vector loads, 16 × 16
    /// multiply-adds).
    /// </summary>
    [Theory]
    [InlineData("Sgemm128", 32, 512)]
    [InlineData("SgemmGrouped128", 32, 512)]
    [InlineData("Sgemm64", 32, 256)]
    [InlineData("SgemmGrouped64", 32, 256)]
    public void TiledSgemmKeepsItsRegisterBlockInRegisters(string kernel, int vectorLoads, int multiplies)
    {
        string ptx = KernelPtx(kernel);
        Assert.DoesNotContain(".local", ptx);
        Assert.Equal(vectorLoads, Regex.Count(ptx, @"ld\.shared\.v4\.f32"));
        Assert.True(Regex.Count(ptx, @"\bmul(\.rn)?\.f32") >= multiplies);
    }

    /// <summary>
    /// The same kernel as Hopper machine code, where an SM sub-partition issues one instruction per cycle and needs an
    /// FFMA every cycle to keep its 32 FP32 lanes busy, so every other instruction in the K loop takes a multiply-add
    /// slot. ptxas builds the kernel for sm_90 with no spills and at most 128 registers (two 256-thread groups per
    /// SM's 65,536 registers); nvdisasm shows the K loop (the backward branch around the FFMAs) doing one staged tile
    /// per iteration: exactly 512 FFMA, 32 LDS.128 and 8 STS (shared memory through shared-space instructions, not
    /// generic ones), 8 global loads, and FFMA at least 84 % of its instructions (85.6 % measured with ptxas 11.8;
    /// 66 % before the k steps were written out and the loop's bounds tests removed). No local memory anywhere. The
    /// same for the grouped kernel, whose tiles run the same code. The 64×64 kernel (4×4 per thread, for products too
    /// small to fill the GPU with 128×128 tiles) stages 16 k per tile: 256 FFMA, 32 LDS.128, 8 STS and 8 global loads
    /// per tile, 71.5 % FFMA at 64 registers (67.7 % at 56 with 8 k per tile; the group-size tiled kernel it replaces:
    /// 35.8 %); its grouped twin, for grouped GEMMs too small for 128×128 tiles, the same (70.3 %). Both stay within 64
    /// registers: four 256-thread groups per SM.
    /// </summary>
    [Theory]
    [InlineData("Sgemm128", 512, 32, 8, 128, 0.84)]
    [InlineData("SgemmGrouped128", 512, 32, 8, 128, 0.84)]
    [InlineData("Sgemm64", 256, 32, 8, 64, 0.65)]
    [InlineData("SgemmGrouped64", 256, 32, 8, 64, 0.65)]
    public void SgemmKLoopIsMostlyFfmaOnHopper(string kernel, int ffma, int lds128, int staged, int maxRegisters, double minShare)
    {
        string? ptxas = FindPtxas(), nvdisasm = FindTool("nvdisasm", "PUREMOE_NVDISASM");
        Assert.SkipWhen(ptxas is null || nvdisasm is null, "ptxas/nvdisasm not found: run `bash scripts/install-ptxas.sh`");
        var dir = Directory.CreateTempSubdirectory("puremoe-sass-");
        try
        {
            string ptx = Path.Combine(dir.FullName, kernel + ".ptx"), cubin = Path.Combine(dir.FullName, kernel + ".cubin");
            File.WriteAllText(ptx, KernelPtx(kernel, CudaInstructionSet.ISA_78));
            var (exit, info) = Run(ptxas!, $"-arch=sm_90 -v -o \"{cubin}\" \"{ptx}\"");
            Assert.True(exit == 0, info);
            Assert.Contains("0 bytes spill stores, 0 bytes spill loads", info);
            int registers = int.Parse(Regex.Match(info, @"Used (\d+) registers").Groups[1].Value);
            Assert.True(registers <= maxRegisters, $"{registers} registers: more than {maxRegisters}\n{info}");

            var (disExit, sass) = Run(nvdisasm!, $"\"{cubin}\"");
            Assert.True(disExit == 0, sass);
            var code = SassCode.Parse(sass);
            Assert.DoesNotContain(code.Ops, op => op.StartsWith("LDL") || op.StartsWith("STL"));
            var loop = code.LoopWithMost("FFMA");
            int Count(string op) => loop.Count(o => o == op);
            Assert.Equal(ffma, Count("FFMA"));
            Assert.Equal(lds128, Count("LDS.128"));
            // Each element a thread stages per tile is one global load and one shared-memory store.
            Assert.Equal(staged, Count("STS"));
            Assert.Equal(staged, Count("LD.E") + Count("LDG.E"));
            double share = (double)Count("FFMA") / loop.Count;
            Assert.True(share >= minShare, $"FFMA is {share:P1} of the K loop's {loop.Count} instructions: " +
                string.Join(" ", loop.GroupBy(o => o).OrderByDescending(g => g.Count()).Select(g => $"{g.Key}:{g.Count()}")));
            TestContext.Current.SendDiagnosticMessage(
                $"{kernel} on sm_90: {registers} registers, K loop {loop.Count} instructions per staged tile, FFMA {share:P1}");
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void TiledSgemmCompilesToPtx() => Assert.Contains("bar.sync", KernelPtx("Sgemm"));

    private static string Ptx(PTXBackend backend, IlgpuKernelCatalog.Entry entry) =>
        ((PTXCompiledKernel)backend.Compile(entry.Description, KernelSpecialization.Empty)).PTXAssembly;

    /// <summary>One kernel's PTX for sm_90 (ISA 8.5 unless given); PUREMOE_DUMP_PTX=dir writes it there.</summary>
    private static string KernelPtx(string method, CudaInstructionSet? isa = null)
    {
        var entry = IlgpuKernelCatalog.All().Single(e => e.Method.Name == method);
        var backend = new PTXBackend(IlgpuDevices.Context, CudaArchitecture.SM_90, isa ?? CudaInstructionSet.ISA_85, nvvmAPI: null!);
        string ptx = Ptx(backend, entry);
        DumpIfAsked(method, ptx);
        return ptx;
    }

    /// <summary>PUREMOE_DUMP_PTX=dir writes the PTX there as NAME.ptx (to read what ILGPU made of a kernel).</summary>
    private static void DumpIfAsked(string name, string ptx)
    {
        if (Environment.GetEnvironmentVariable("PUREMOE_DUMP_PTX") is not { Length: > 0 } dir) return;
        Directory.CreateDirectory(dir);
        string file = string.Concat(name.Select(c => char.IsLetterOrDigit(c) || c is '.' or '_' or '-' ? c : '_'));
        File.WriteAllText(Path.Combine(dir, file + ".ptx"), ptx);
    }

    /// <summary>PUREMOE_PTXAS, then .tools/cuda/ptxas of the repository (scripts/install-ptxas.sh), then PATH.</summary>
    private static string? FindPtxas() => FindTool("ptxas", "PUREMOE_PTXAS");

    /// <summary>The environment variable's file, then .tools/cuda/NAME of the repository, then PATH.</summary>
    private static string? FindTool(string name, string variable)
    {
        if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } env && File.Exists(env)) return env;
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, ".tools", "cuda", name);
            if (File.Exists(candidate)) return candidate;
            if (File.Exists(Path.Combine(d.FullName, "PureMoE.sln"))) break;
        }
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
            if (dir.Length > 0 && File.Exists(Path.Combine(dir, name))) return Path.Combine(dir, name);
        return null;
    }

    private static (int Exit, string Output) Run(string file, string arguments)
    {
        using var p = Process.Start(new ProcessStartInfo(file, arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        })!;
        // Read both pipes concurrently so neither can fill up and block ptxas.
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout + stderr.Result);
    }
}

/// <summary>
/// Disassembled machine code (nvdisasm's text) as a list of opcodes with the positions of its labels, enough to find
/// a loop: a branch back to an earlier label closes one.
/// </summary>
internal sealed class SassCode
{
    private readonly List<string> _ops = [];
    private readonly List<(int At, string Target)> _branches = [];
    private readonly Dictionary<string, int> _labels = [];

    /// <summary>Opcodes in program order (predicates dropped, modifiers kept: "LDS.128").</summary>
    public IReadOnlyList<string> Ops => _ops;

    /// <summary>Reads nvdisasm output.</summary>
    public static SassCode Parse(string sass)
    {
        var code = new SassCode();
        foreach (string line in sass.Split('\n'))
        {
            var label = Regex.Match(line, @"^\s*(\.L_x_\d+):");
            if (label.Success)
            {
                code._labels[label.Groups[1].Value] = code._ops.Count;
                continue;
            }
            var op = Regex.Match(line, @"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*)");
            if (!op.Success) continue;
            if (op.Groups[1].Value == "BRA" && Regex.Match(op.Groups[2].Value, @"\((\.L_x_\d+)\)") is { Success: true } target)
                code._branches.Add((code._ops.Count, target.Groups[1].Value));
            code._ops.Add(op.Groups[1].Value);
        }
        return code;
    }

    /// <summary>The body (label to backward branch, inclusive) of the loop with the most instances of an opcode.</summary>
    public IReadOnlyList<string> LoopWithMost(string op)
    {
        IReadOnlyList<string> best = [];
        int bestCount = -1;
        foreach (var (at, target) in _branches)
        {
            if (!_labels.TryGetValue(target, out int start) || start > at) continue;
            var body = _ops.Skip(start).Take(at - start + 1).ToList();
            int count = body.Count(o => o == op);
            if (count > bestCount) (best, bestCount) = (body, count);
        }
        return best;
    }
}
