using PureMoE.Backends;
using PureMoE.Backends.Cpu;
using PureMoE.Backends.Reference;

namespace PureMoE;

/// <summary>What kind of hardware (or emulation) a <see cref="Device"/> is.</summary>
public enum DeviceKind
{
    /// <summary>The CPU with the fast SIMD backend: the default.</summary>
    Cpu,
    /// <summary>The CPU with the simple reference kernels: the test oracle, and float64 reference runs.</summary>
    CpuReference,
    /// <summary>An NVIDIA GPU through ILGPU's CUDA accelerator (float32 and int64 only).</summary>
    Cuda,
    /// <summary>An OpenCL device through ILGPU's OpenCL accelerator (float32 and int64 only).</summary>
    OpenCL,
    /// <summary>ILGPU's CPU accelerator: a GPU emulator running the same kernels, for tests without a GPU.</summary>
    IlgpuCpu,
    /// <summary>
    /// ILGPU's CPU accelerator shaped like a CUDA GPU (32-lane warps, 256-thread groups): the emulator taking the code
    /// paths the backend takes on a GPU (the 64×64 and 128×128 SGEMMs, grouped GEMMs), to check them without one.
    /// </summary>
    IlgpuWide,
}

/// <summary>
/// Where a tensor lives and which backend runs its kernels. A tensor lives on one device; moving is explicit
/// (<see cref="Tensor.To(Device)"/>) and mixing devices in one op is an error.
/// </summary>
public sealed class Device : IEquatable<Device>
{
    private Device(DeviceKind kind, int index, IBackend backend)
    {
        Kind = kind;
        Index = index;
        Backend = backend;
    }

    /// <summary>The CPU with SIMD kernels and a blocked, multi-threaded SGEMM (the default device).</summary>
    public static Device Cpu { get; } = new(DeviceKind.Cpu, 0, new CpuBackend());

    /// <summary>The CPU with plain-loop reference kernels. Shares host memory with <see cref="Cpu"/>.</summary>
    public static Device CpuReference { get; } = new(DeviceKind.CpuReference, 0, new ReferenceBackend());

    /// <summary>
    /// ILGPU's CPU accelerator (an emulator of a GPU: same kernels, groups, shared memory and barriers, slowly).
    /// Created on first use; float32 and int64 tensors only.
    /// </summary>
    public static Device IlgpuCpu => IlgpuCpuAt(0);

    /// <summary>
    /// ILGPU CPU accelerator number <paramref name="index"/>: each index is a separate accelerator with its own memory
    /// (index 0 is <see cref="IlgpuCpu"/>), so tests can run several "GPUs" on a machine without one.
    /// </summary>
    public static Device IlgpuCpuAt(int index) => Backends.Ilgpu.IlgpuDevices.Get(DeviceKind.IlgpuCpu, index);

    /// <summary>
    /// ILGPU's CPU accelerator shaped like a CUDA GPU (32-lane warps, 256-thread groups, one multiprocessor), so that
    /// the backend takes the paths it takes on a GPU: the 64×64 and 128×128 SGEMMs and grouped GEMMs, which
    /// <see cref="IlgpuCpu"/>'s 16-thread groups cannot run. Slower than <see cref="IlgpuCpu"/>; for checking the GPU
    /// code path end to end on a machine without a GPU.
    /// </summary>
    public static Device IlgpuWide => IlgpuWideAt(0);

    /// <summary>The CUDA-shaped CPU accelerator number <paramref name="index"/> (each a separate accelerator, as for <see cref="IlgpuCpuAt"/>).</summary>
    public static Device IlgpuWideAt(int index) => Backends.Ilgpu.IlgpuDevices.Get(DeviceKind.IlgpuWide, index);

    /// <summary>CUDA GPU number <paramref name="index"/> (created on first use; errors clearly when there is none).</summary>
    public static Device Cuda(int index = 0) => Backends.Ilgpu.IlgpuDevices.Get(DeviceKind.Cuda, index);

    /// <summary>OpenCL device number <paramref name="index"/> among those ILGPU supports (created on first use).</summary>
    public static Device OpenCL(int index = 0) => Backends.Ilgpu.IlgpuDevices.Get(DeviceKind.OpenCL, index);

    /// <summary>The forms <see cref="Parse"/> accepts, for messages.</summary>
    public static string ParseForms { get; } = "cpu, cpu-reference, ilgpu-cpu, ilgpu-cpu:N, ilgpu-wide, ilgpu-wide:N, cuda, cuda:N, opencl, opencl:N (N ≥ 0)";

    /// <summary>
    /// The device named by <paramref name="text"/>, in the form <see cref="ToString"/> writes (case-insensitive):
    /// "cpu", "cpu-reference", "ilgpu-cpu" (= "ilgpu-cpu:0"), "ilgpu-cpu:N", "ilgpu-wide" (= "ilgpu-wide:0"),
    /// "ilgpu-wide:N", "cuda" (= "cuda:0"), "cuda:N",
    /// "opencl" (= "opencl:0"), "opencl:N".
    /// ILGPU devices are created here, so a well-formed name of a device this machine lacks (e.g. "cuda" without
    /// a GPU) throws <see cref="InvalidOperationException"/> listing the ILGPU devices that exist; a malformed
    /// name throws <see cref="ArgumentException"/> listing the accepted forms.
    /// </summary>
    public static Device Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string s = text.Trim().ToLowerInvariant();
        switch (s)
        {
            case "cpu": return Cpu;
            case "cpu-reference": return CpuReference;
            case "ilgpu-cpu": return IlgpuCpu;
            case "ilgpu-wide": return IlgpuWide;
            case "cuda": return Cuda(0);
            case "opencl": return OpenCL(0);
        }
        int colon = s.IndexOf(':');
        if (colon > 0 && int.TryParse(s.AsSpan(colon + 1), System.Globalization.NumberStyles.None,
                System.Globalization.CultureInfo.InvariantCulture, out int index))
        {
            switch (s[..colon])
            {
                case "ilgpu-cpu": return IlgpuCpuAt(index);
                case "ilgpu-wide": return IlgpuWideAt(index);
                case "cuda": return Cuda(index);
                case "opencl": return OpenCL(index);
            }
        }
        throw new ArgumentException($"unknown device '{text}': expected one of {ParseForms}", nameof(text));
    }

    /// <summary>Makes an ILGPU device around its backend (called once per device by the ILGPU device registry).</summary>
    internal static Device CreateIlgpu(DeviceKind kind, int index, IBackend backend) => new(kind, index, backend);

    /// <summary>The device kind.</summary>
    public DeviceKind Kind { get; }

    /// <summary>The index among devices of the same kind.</summary>
    public int Index { get; }

    /// <summary>True when tensors on this device live in ordinary host arrays.</summary>
    public bool IsHost => Kind is DeviceKind.Cpu or DeviceKind.CpuReference;

    /// <summary>True for devices whose kernels are ILGPU kernels (CUDA, OpenCL, the ILGPU CPU emulator).</summary>
    public bool IsIlgpu => Kind is DeviceKind.Cuda or DeviceKind.OpenCL or DeviceKind.IlgpuCpu or DeviceKind.IlgpuWide;

    /// <summary>
    /// Device → host reads of this device so far (ToArray, Item, ToDoubleArray, To(Device.Cpu), ...): each one waits
    /// for all the device's queued work. Always 0 for host devices, whose tensors are host memory already.
    /// </summary>
    public long HostReads => Backend is Backends.Ilgpu.IlgpuBackend ilgpu ? ilgpu.HostReads : 0;

    /// <summary>
    /// Work queued on this device so far: kernel launches, device-to-device copies and fills (each costs a few
    /// microseconds of host time on a GPU, whatever its size). Always 0 for host devices.
    /// </summary>
    public long Launches => Backend is Backends.Ilgpu.IlgpuBackend ilgpu ? ilgpu.Launches : 0;

    /// <summary>
    /// <see cref="Launches"/> split by kernel (named after the backend's kernel, e.g. "adamW" or "binary Mul"),
    /// "zero fill" and "device copy", as a snapshot: where a step's launches come from. Empty for host devices.
    /// </summary>
    public IReadOnlyDictionary<string, long> LaunchesByKernel =>
        Backend is Backends.Ilgpu.IlgpuBackend ilgpu ? ilgpu.LaunchesByKernel : new Dictionary<string, long>();

    /// <summary>
    /// Device memory held by this device's tensors and buffers now, in bytes (as torch.cuda.memory_allocated; sizes
    /// rounded up to the pool's size classes). Always 0 for host devices, whose tensors are managed arrays.
    /// </summary>
    public long MemoryInUse => Backend is Backends.Ilgpu.IlgpuBackend ilgpu ? ilgpu.Pool.LeasedBytes : 0;

    /// <summary>
    /// The most <see cref="MemoryInUse"/> has been since the device was first used or <see cref="ResetPeakMemory"/>
    /// (as torch.cuda.max_memory_allocated): what a training step needs at its fullest. 0 for host devices.
    /// </summary>
    public long PeakMemoryInUse => Backend is Backends.Ilgpu.IlgpuBackend ilgpu ? ilgpu.Pool.PeakLeasedBytes : 0;

    /// <summary>
    /// Device memory taken from the driver: in use, plus what the caching pool keeps for reuse (as
    /// torch.cuda.memory_reserved). 0 for host devices.
    /// </summary>
    public long MemoryReserved => Backend is Backends.Ilgpu.IlgpuBackend ilgpu ? ilgpu.Pool.LeasedBytes + ilgpu.Pool.CachedBytes : 0;

    /// <summary>Starts <see cref="PeakMemoryInUse"/> again from what is in use now (nothing for host devices).</summary>
    public void ResetPeakMemory()
    {
        if (Backend is Backends.Ilgpu.IlgpuBackend ilgpu) ilgpu.Pool.ResetPeak();
    }

    /// <summary>
    /// Kernels compiled for this device so far: each is compiled once per device, on its first use, so a training
    /// run compiles most of them in its first step. Always 0 for host devices.
    /// </summary>
    public int KernelsCompiled => Backend is Backends.Ilgpu.IlgpuBackend ilgpu ? ilgpu.KernelsCompiled : 0;

    /// <summary>
    /// Time spent compiling the <see cref="KernelsCompiled"/> (ILGPU's compiler, and on CUDA the driver's assembly
    /// of the PTX): why a first step on a GPU takes seconds. Zero for host devices.
    /// </summary>
    public TimeSpan KernelCompileTime => Backend is Backends.Ilgpu.IlgpuBackend ilgpu ? ilgpu.KernelCompileTime : TimeSpan.Zero;

    /// <summary>
    /// Null where uploads to this device are queued without waiting (always, for host devices); otherwise why this
    /// machine refused the page-locked memory that needs, and every upload is a synchronous copy (correct, slower).
    /// </summary>
    public string? UploadStagingUnavailable => Backend is Backends.Ilgpu.IlgpuBackend ilgpu ? ilgpu.UploadStagingUnavailable : null;

    /// <summary>The kernels of this device.</summary>
    internal IBackend Backend { get; }

    /// <inheritdoc />
    public bool Equals(Device? other) => other is not null && other.Kind == Kind && other.Index == Index;
    /// <inheritdoc />
    public override bool Equals(object? obj) => Equals(obj as Device);
    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Kind, Index);
    /// <summary>"cpu", "cpu-reference", "cuda:0", "opencl:0", "ilgpu-cpu" (index 0), "ilgpu-cpu:1", "ilgpu-wide" (index 0), "ilgpu-wide:1".</summary>
    public override string ToString() => Kind switch
    {
        DeviceKind.Cpu => "cpu",
        DeviceKind.CpuReference => "cpu-reference",
        DeviceKind.IlgpuCpu => Index == 0 ? "ilgpu-cpu" : $"ilgpu-cpu:{Index}",
        DeviceKind.IlgpuWide => Index == 0 ? "ilgpu-wide" : $"ilgpu-wide:{Index}",
        _ => $"{Kind.ToString().ToLowerInvariant()}:{Index}",
    };
}
