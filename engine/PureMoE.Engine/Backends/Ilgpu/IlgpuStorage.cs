using ILGPU;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>
/// Device memory of an ILGPU accelerator: float32 or int64 elements in a buffer leased from the accelerator's
/// <see cref="IlgpuMemoryPool"/>. <see cref="Dispose"/> (or, failing that, the finalizer) returns the buffer to the
/// pool; it is never freed per op. float64 is not supported on ILGPU devices.
/// </summary>
public sealed class IlgpuStorage : Storage
{
    private readonly IlgpuMemoryPool _pool;
    private MemoryBuffer1D<byte, Stride1D.Dense>? _buffer;

    internal IlgpuStorage(IlgpuMemoryPool pool, MemoryBuffer1D<byte, Stride1D.Dense> buffer, DType dtype, int length)
    {
        if (dtype == DType.Float64)
            throw new NotSupportedException("IlgpuStorage: float64 is not supported on ILGPU devices (float32 and int64 only)");
        _pool = pool;
        _buffer = buffer;
        DType = dtype;
        Length = length;
        ArrayView<byte> bytes = buffer.View;
        Bytes = bytes.SubView(0, (long)length * dtype.SizeInBytes());
        DeviceScope.Track(this);
    }

    /// <inheritdoc />
    public override DType DType { get; }

    /// <inheritdoc />
    public override int Length { get; }

    /// <summary>The accelerator that owns the memory.</summary>
    public Accelerator Accelerator => _pool.Accelerator;

    /// <summary>The elements as raw bytes (exactly Length × element size).</summary>
    internal ArrayView<byte> Bytes { get; }

    /// <summary>The elements as float32 (the storage must be float32).</summary>
    internal ArrayView<float> F => DType == DType.Float32 ? Live.Cast<float>()
        : throw new InvalidOperationException($"IlgpuStorage: expected float32, the buffer is {DType.Name()}");

    /// <summary>The elements as int64 (the storage must be int64).</summary>
    internal ArrayView<long> L => DType == DType.Int64 ? Live.Cast<long>()
        : throw new InvalidOperationException($"IlgpuStorage: expected int64, the buffer is {DType.Name()}");

    private ArrayView<byte> Live => _buffer is not null ? Bytes : throw new ObjectDisposedException(nameof(IlgpuStorage));

    /// <summary>Returns the buffer to the pool. Later use of this storage is an error.</summary>
    public override void Dispose()
    {
        var b = Interlocked.Exchange(ref _buffer, null);
        if (b is not null) _pool.Return(b);
        base.Dispose();
    }

    /// <summary>A storage dropped without Dispose still gives its buffer back (the pool keeps the buffer alive).</summary>
    ~IlgpuStorage()
    {
        var b = Interlocked.Exchange(ref _buffer, null);
        if (b is not null) _pool.Return(b);
    }
}
