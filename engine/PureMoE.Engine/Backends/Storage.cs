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
/// after its scope throws <see cref="ObjectDisposedException"/> instead of reading another step's numbers. Such an
/// array can be longer than the storage's <see cref="Length"/> (the pool reuses an array for a request a little
/// shorter, and gives new ones some headroom); the elements past it belong to nobody (kernels index by offset and
/// count, never by the array's length).
/// </remarks>
public sealed class CpuStorage : Storage
{
    private static long s_pooledCreated;

    private Array? _data;
    private readonly int _length;
    private readonly bool _pooled;

    /// <summary>Wraps an array (not copied); the storage's length is the array's.</summary>
    public CpuStorage(Array data)
        : this(data, data.Length, pooled: false)
    {
    }

    private CpuStorage(Array data, int length, bool pooled)
    {
        _data = data;
        _length = length;
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
        if (UninitializedMemory.Poison) Poison(storage.Data, 0, storage.Data.Length);
        return storage;
    }

    /// <summary>Fills <paramref name="count"/> elements from <paramref name="start"/> with NaN (long.MinValue for int64).</summary>
    private static void Poison(Array array, int start, int count)
    {
        switch (array)
        {
            case float[] f: f.AsSpan(start, count).Fill(float.NaN); break;
            case double[] d: d.AsSpan(start, count).Fill(double.NaN); break;
            case long[] l: l.AsSpan(start, count).Fill(long.MinValue); break;
        }
    }

    /// <summary>
    /// A storage of <paramref name="length"/> elements. While a scope that reuses host memory is current, a large
    /// one takes a free array of its type and size class from <see cref="HostArrayPool"/> that is long enough (its
    /// first <paramref name="length"/> elements cleared if <paramref name="zeroed"/>), else a new one of the length
    /// the pool says (a little headroom, or the whole class), and the scope owns the storage; otherwise a new array of
    /// exactly <paramref name="length"/>, owned by nobody.
    /// </summary>
    private static CpuStorage Create(DType dtype, int length, bool zeroed)
    {
        if (length < HostArrayPool.MinLength || DeviceScope.Current is not { HostPool: { } pool })
            return new CpuStorage(NewArray(dtype, length, zeroed));
        var elementType = dtype switch
        {
            DType.Float32 => typeof(float),
            DType.Float64 => typeof(double),
            DType.Int64 => typeof(long),
            _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
        };
        var array = pool.TryRent(elementType, length, out int newCapacity);
        if (array is null) array = NewArray(dtype, newCapacity, zeroed);
        else if (zeroed) Array.Clear(array, 0, length);
        // Tests poison the elements past the length too: a kernel that read the array's length instead of its
        // tensor's size would then see NaN, not a plausible number.
        if (UninitializedMemory.Poison && array.Length > length) Poison(array, length, array.Length - length);
        var storage = new CpuStorage(array, length, pooled: true) { Serial = Interlocked.Increment(ref s_pooledCreated) };
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
    /// Null for any other storage, or when already taken. Under <see cref="UninitializedMemory.Poison"/> the array
    /// is filled with NaN first, so code that kept the array itself would read NaN, not another tensor's numbers.
    /// </summary>
    internal Array? TakeForPool()
    {
        if (!_pooled || Interlocked.Exchange(ref _data, null) is not Array array) return null;
        if (UninitializedMemory.Poison) Poison(array, 0, array.Length);
        return array;
    }

    /// <summary>
    /// For a storage from the host-array pool, its place in the order such storages were created (1, 2, …, across
    /// the process); 0 for any other. The backward pass recycles only storages created after it began.
    /// </summary>
    internal long Serial { get; private init; }

    /// <summary>How many storages the host-array pool has made so far (the last <see cref="Serial"/>).</summary>
    internal static long PooledCreated => Interlocked.Read(ref s_pooledCreated);

    /// <summary>The array (from the host-array pool it may be longer than <see cref="Length"/>).</summary>
    /// <exception cref="ObjectDisposedException">The scope that owned this storage has ended.</exception>
    public Array Data => _data ?? throw Disposed();

    private static ObjectDisposedException Disposed() => new(nameof(CpuStorage),
        "a host tensor was used after its array went back to the pool: the DeviceScope that owned it ended (keep it with " +
        "scope.Keep(tensor) or create it outside the scope), or it was a gradient the backward pass had consumed and recycled");

    /// <inheritdoc />
    public override DType DType { get; }

    /// <inheritdoc />
    /// <exception cref="ObjectDisposedException">The scope that owned this storage has ended.</exception>
    public override int Length => _data is null ? throw Disposed() : _length;

    /// <summary>The array as T[] (T must match the dtype).</summary>
    public T[] As<T>() => (T[])Data;
}
