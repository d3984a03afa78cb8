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
public sealed class CpuStorage : Storage
{
    /// <summary>Wraps an array (not copied).</summary>
    public CpuStorage(Array data)
    {
        Data = data;
        DType = data switch
        {
            float[] => DType.Float32,
            double[] => DType.Float64,
            long[] => DType.Int64,
            _ => throw new ArgumentException($"CpuStorage: unsupported array type {data.GetType().Name}"),
        };
    }

    /// <summary>Allocates a zeroed array.</summary>
    public static CpuStorage Allocate(DType dtype, int length) => new(dtype switch
    {
        DType.Float32 => new float[length],
        DType.Float64 => new double[length],
        DType.Int64 => new long[length],
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    });

    /// <summary>
    /// Allocates an array whose contents are unspecified (for buffers a kernel overwrites entirely); filled with NaN
    /// (long.MinValue for int64) while <see cref="UninitializedMemory.Poison"/> is on.
    /// </summary>
    public static CpuStorage AllocateUninitialized(DType dtype, int length)
    {
        var storage = new CpuStorage(dtype switch
        {
            DType.Float32 => GC.AllocateUninitializedArray<float>(length),
            DType.Float64 => GC.AllocateUninitializedArray<double>(length),
            DType.Int64 => GC.AllocateUninitializedArray<long>(length),
            _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
        });
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

    /// <summary>The array.</summary>
    public Array Data { get; }

    /// <inheritdoc />
    public override DType DType { get; }

    /// <inheritdoc />
    public override int Length => Data.Length;

    /// <summary>The array as T[] (T must match the dtype).</summary>
    public T[] As<T>() => (T[])Data;
}
