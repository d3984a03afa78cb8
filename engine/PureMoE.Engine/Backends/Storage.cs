using PureMoE.Backends.Cpu;

namespace PureMoE.Backends;

/// <summary>
/// A flat buffer of elements owned by one device. Tensors are views (shape, strides, offset) over a storage.
/// </summary>
public abstract class Storage : IDisposable
{
    /// <summary>Element type.</summary>
    public abstract DType DType { get; }

    /// <summary>Number of elements.</summary>
    public abstract int Length { get; }

    /// <summary>Releases device memory (a no-op for host arrays).</summary>
    public virtual void Dispose() => GC.SuppressFinalize(this);
}

/// <summary>Host memory: a plain .NET array of float, double or long.</summary>
/// <remarks>
/// An array allocated while a <see cref="DeviceScope"/> that reuses host memory is current belongs to that scope:
/// when the scope ends it goes back to a pool for the next scope, and this storage is emptied, so a tensor used
/// after its scope throws <see cref="ObjectDisposedException"/> instead of reading another step's numbers.
/// </remarks>
public sealed class CpuStorage : Storage
{
    private Array? _data;
    private readonly bool _pooled;

    /// <summary>Wraps an array (not copied).</summary>
    public CpuStorage(Array data)
        : this(data, pooled: false)
    {
    }

    private CpuStorage(Array data, bool pooled)
    {
        _data = data;
        _pooled = pooled;
        DType = data switch
        {
            float[] => DType.Float32,
            double[] => DType.Float64,
            long[] => DType.Int64,
            _ => throw new ArgumentException($"CpuStorage: unsupported array type {data.GetType().Name}"),
        };
    }

    /// <summary>Allocates a zeroed array.</summary>
    public static CpuStorage Allocate(DType dtype, int length) => Create(dtype, length, zeroed: true);

    /// <summary>
    /// Allocates an array whose contents are unspecified (for buffers a kernel overwrites entirely); filled with NaN
    /// (long.MinValue for int64) while <see cref="UninitializedMemory.Poison"/> is on.
    /// </summary>
    public static CpuStorage AllocateUninitialized(DType dtype, int length)
    {
        var storage = Create(dtype, length, zeroed: false);
        if (UninitializedMemory.Poison)
        {
            switch (storage.Data)
            {
                case float[] f: Array.Fill(f, float.NaN); break;
                case double[] d: Array.Fill(d, double.NaN); break;
                case long[] l: Array.Fill(l, long.MinValue); break;
            }
        }
        return storage;
    }

    /// <summary>
    /// A storage of <paramref name="length"/> elements. While a scope that reuses host memory is current, a large
    /// array comes from <see cref="HostArrayPool"/> when one of its type and length is free (cleared if
    /// <paramref name="zeroed"/>), and the scope owns the storage; otherwise a new array, owned by nobody.
    /// </summary>
    private static CpuStorage Create(DType dtype, int length, bool zeroed)
    {
        if (length < HostArrayPool.MinLength || DeviceScope.Current is not { ReusesHostMemory: true })
            return new CpuStorage(NewArray(dtype, length, zeroed));
        var elementType = dtype switch
        {
            DType.Float32 => typeof(float),
            DType.Float64 => typeof(double),
            DType.Int64 => typeof(long),
            _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
        };
        var array = HostArrayPool.Shared.TryRent(elementType, length);
        if (array is null) array = NewArray(dtype, length, zeroed);
        else if (zeroed) Array.Clear(array);
        var storage = new CpuStorage(array, pooled: true);
        DeviceScope.Track(storage);
        return storage;
    }

    private static Array NewArray(DType dtype, int length, bool zeroed) => dtype switch
    {
        DType.Float32 => zeroed ? new float[length] : GC.AllocateUninitializedArray<float>(length),
        DType.Float64 => zeroed ? new double[length] : GC.AllocateUninitializedArray<double>(length),
        DType.Int64 => zeroed ? new long[length] : GC.AllocateUninitializedArray<long>(length),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>
    /// For a storage a reusing scope owns: empties it and returns its array (the scope hands it to the pool).
    /// Null for any other storage, or when already taken.
    /// </summary>
    internal Array? TakeForPool() => _pooled ? Interlocked.Exchange(ref _data, null) : null;

    /// <summary>The array.</summary>
    /// <exception cref="ObjectDisposedException">The scope that owned this storage has ended.</exception>
    public Array Data => _data ?? throw new ObjectDisposedException(nameof(CpuStorage),
        "a host tensor was used after the DeviceScope that owned it ended; keep it with scope.Keep(tensor) or create it outside the scope");

    /// <inheritdoc />
    public override DType DType { get; }

    /// <inheritdoc />
    public override int Length => Data.Length;

    /// <summary>The array as T[] (T must match the dtype).</summary>
    public T[] As<T>() => (T[])Data;
}
