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

    /// <summary>The device kind.</summary>
    public DeviceKind Kind { get; }

    /// <summary>The index among devices of the same kind.</summary>
    public int Index { get; }

    /// <summary>True when tensors on this device live in ordinary host arrays.</summary>
    public bool IsHost => Kind is DeviceKind.Cpu or DeviceKind.CpuReference;

    /// <summary>The kernels of this device.</summary>
    internal IBackend Backend { get; }

    /// <inheritdoc />
    public bool Equals(Device? other) => other is not null && other.Kind == Kind && other.Index == Index;
    /// <inheritdoc />
    public override bool Equals(object? obj) => Equals(obj as Device);
    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Kind, Index);
    /// <summary>"cpu", "cpu-reference".</summary>
    public override string ToString() => Kind switch
    {
        DeviceKind.Cpu => "cpu",
        DeviceKind.CpuReference => "cpu-reference",
        _ => $"{Kind.ToString().ToLowerInvariant()}:{Index}",
    };
}
