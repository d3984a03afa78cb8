using System.Buffers.Binary;

namespace PureMoE.IO;

/// <summary>
/// A named tensor in safetensors form: a dtype, a row-major shape and the raw little-endian bytes.
/// Instances are immutable; the invariant <c>product(Shape) × dtype size == Data.Length</c> is checked
/// on construction.
/// </summary>
public sealed class SafetensorsTensor
{
    private readonly int[] _shape;
    private readonly byte[] _data;

    /// <summary>Creates a tensor from raw little-endian bytes (the bytes are copied).</summary>
    /// <param name="name">Tensor name (any string; the writer rejects <c>__metadata__</c>).</param>
    /// <param name="dtype">Element type.</param>
    /// <param name="shape">Row-major shape; empty for a scalar. Dimensions must be non-negative.</param>
    /// <param name="data">Raw bytes; the length must equal the element count times the element size.</param>
    /// <exception cref="ArgumentException">A negative dimension, an overflowing shape or a length mismatch.</exception>
    public SafetensorsTensor(string name, SafetensorsDType dtype, int[] shape, ReadOnlySpan<byte> data)
        : this(name, dtype, shape, data.ToArray(), copyShape: true)
    {
    }

    /// <summary>Takes ownership of <paramref name="data"/> (no copy).</summary>
    internal SafetensorsTensor(string name, SafetensorsDType dtype, int[] shape, byte[] data, bool copyShape)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(data);
        _ = dtype.ElementSize(); // rejects undefined enum values
        long expected = SafetensorsCodec.CheckedByteLength(shape, dtype, nameof(shape));
        if (expected != data.Length)
        {
            throw new ArgumentException(
                $"Tensor '{name}': shape [{string.Join(",", shape)}] with dtype {dtype.ToJsonName()} needs {expected} bytes, but {data.Length} bytes were given.",
                nameof(data));
        }
        Name = name;
        DType = dtype;
        _shape = copyShape ? (int[])shape.Clone() : shape;
        _data = data;
    }

    /// <summary>The tensor's name (its key in the file header).</summary>
    public string Name { get; }

    /// <summary>The element type.</summary>
    public SafetensorsDType DType { get; }

    /// <summary>A copy of the row-major shape (empty for a scalar).</summary>
    public int[] Shape => (int[])_shape.Clone();

    /// <summary>Number of dimensions.</summary>
    public int Rank => _shape.Length;

    /// <summary>Number of elements (product of the shape; 1 for a scalar).</summary>
    public long ElementCount => _data.Length / DType.ElementSize();

    /// <summary>The raw little-endian bytes.</summary>
    public ReadOnlyMemory<byte> Data => _data;

    /// <summary>Creates an F32 tensor.</summary>
    /// <param name="name">Tensor name.</param>
    /// <param name="data">Values in row-major order.</param>
    /// <param name="shape">Shape whose product equals <c>data.Length</c>.</param>
    /// <returns>The tensor.</returns>
    public static SafetensorsTensor FromFloat32(string name, float[] data, int[] shape) =>
        Create(name, SafetensorsDType.F32, data, shape);

    /// <summary>Creates an F64 tensor.</summary>
    /// <param name="name">Tensor name.</param>
    /// <param name="data">Values in row-major order.</param>
    /// <param name="shape">Shape whose product equals <c>data.Length</c>.</param>
    /// <returns>The tensor.</returns>
    public static SafetensorsTensor FromFloat64(string name, double[] data, int[] shape) =>
        Create(name, SafetensorsDType.F64, data, shape);

    /// <summary>Creates an F16 tensor.</summary>
    /// <param name="name">Tensor name.</param>
    /// <param name="data">Values in row-major order.</param>
    /// <param name="shape">Shape whose product equals <c>data.Length</c>.</param>
    /// <returns>The tensor.</returns>
    public static SafetensorsTensor FromFloat16(string name, Half[] data, int[] shape) =>
        Create(name, SafetensorsDType.F16, data, shape);

    /// <summary>Creates a BF16 tensor by rounding floats to bfloat16 (round-to-nearest-even; NaN stays NaN).</summary>
    /// <param name="name">Tensor name.</param>
    /// <param name="data">Values in row-major order.</param>
    /// <param name="shape">Shape whose product equals <c>data.Length</c>.</param>
    /// <returns>The tensor.</returns>
    public static SafetensorsTensor FromBFloat16(string name, float[] data, int[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        var bits = new ushort[data.Length];
        for (int i = 0; i < data.Length; i++)
        {
            bits[i] = SafetensorsCodec.FloatToBFloat16Bits(data[i]);
        }
        return Create(name, SafetensorsDType.BF16, bits, shape);
    }

    /// <summary>Creates a BF16 tensor from raw bfloat16 bit patterns (lossless).</summary>
    /// <param name="name">Tensor name.</param>
    /// <param name="bits">bfloat16 bit patterns in row-major order.</param>
    /// <param name="shape">Shape whose product equals <c>bits.Length</c>.</param>
    /// <returns>The tensor.</returns>
    public static SafetensorsTensor FromBFloat16Bits(string name, ushort[] bits, int[] shape) =>
        Create(name, SafetensorsDType.BF16, bits, shape);

    /// <summary>Creates an I64 tensor.</summary>
    /// <param name="name">Tensor name.</param>
    /// <param name="data">Values in row-major order.</param>
    /// <param name="shape">Shape whose product equals <c>data.Length</c>.</param>
    /// <returns>The tensor.</returns>
    public static SafetensorsTensor FromInt64(string name, long[] data, int[] shape) =>
        Create(name, SafetensorsDType.I64, data, shape);

    /// <summary>Creates an I32 tensor.</summary>
    /// <param name="name">Tensor name.</param>
    /// <param name="data">Values in row-major order.</param>
    /// <param name="shape">Shape whose product equals <c>data.Length</c>.</param>
    /// <returns>The tensor.</returns>
    public static SafetensorsTensor FromInt32(string name, int[] data, int[] shape) =>
        Create(name, SafetensorsDType.I32, data, shape);

    /// <summary>Creates a U8 tensor.</summary>
    /// <param name="name">Tensor name.</param>
    /// <param name="data">Values in row-major order.</param>
    /// <param name="shape">Shape whose product equals <c>data.Length</c>.</param>
    /// <returns>The tensor.</returns>
    public static SafetensorsTensor FromUInt8(string name, byte[] data, int[] shape) =>
        Create(name, SafetensorsDType.U8, data, shape);

    /// <summary>Creates a BOOL tensor (stored as bytes 0/1).</summary>
    /// <param name="name">Tensor name.</param>
    /// <param name="data">Values in row-major order.</param>
    /// <param name="shape">Shape whose product equals <c>data.Length</c>.</param>
    /// <returns>The tensor.</returns>
    public static SafetensorsTensor FromBool(string name, bool[] data, int[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        var bytes = new byte[data.Length];
        for (int i = 0; i < data.Length; i++)
        {
            bytes[i] = data[i] ? (byte)1 : (byte)0;
        }
        return Create(name, SafetensorsDType.BOOL, bytes, shape);
    }

    /// <summary>
    /// Converts to floats. F32 is exact; F64 is rounded; F16/BF16 widen exactly; integers and BOOL
    /// are converted numerically (large I64/I32 values may round).
    /// </summary>
    /// <returns>A new array with <see cref="ElementCount"/> values.</returns>
    public float[] ToFloat32()
    {
        ReadOnlySpan<byte> b = _data;
        switch (DType)
        {
            case SafetensorsDType.F32:
                return SafetensorsCodec.FromLittleEndianBytes<float>(b);
            case SafetensorsDType.BF16:
            {
                var r = new float[b.Length / 2];
                for (int i = 0; i < r.Length; i++)
                {
                    r[i] = SafetensorsCodec.BFloat16BitsToFloat(BinaryPrimitives.ReadUInt16LittleEndian(b[(2 * i)..]));
                }
                return r;
            }
            default:
            {
                double[] d = ToFloat64();
                var r = new float[d.Length];
                for (int i = 0; i < r.Length; i++)
                {
                    r[i] = (float)d[i];
                }
                return r;
            }
        }
    }

    /// <summary>Converts to doubles (exact for every supported dtype except I64 beyond 2^53).</summary>
    /// <returns>A new array with <see cref="ElementCount"/> values.</returns>
    public double[] ToFloat64()
    {
        ReadOnlySpan<byte> b = _data;
        int n = (int)ElementCount;
        if (DType == SafetensorsDType.F64)
        {
            return SafetensorsCodec.FromLittleEndianBytes<double>(b);
        }
        var r = new double[n];
        for (int i = 0; i < n; i++)
        {
            r[i] = DType switch
            {
                SafetensorsDType.F32 => BinaryPrimitives.ReadSingleLittleEndian(b[(4 * i)..]),
                SafetensorsDType.F16 => (double)BinaryPrimitives.ReadHalfLittleEndian(b[(2 * i)..]),
                SafetensorsDType.BF16 => SafetensorsCodec.BFloat16BitsToFloat(BinaryPrimitives.ReadUInt16LittleEndian(b[(2 * i)..])),
                SafetensorsDType.I64 => BinaryPrimitives.ReadInt64LittleEndian(b[(8 * i)..]),
                SafetensorsDType.I32 => BinaryPrimitives.ReadInt32LittleEndian(b[(4 * i)..]),
                SafetensorsDType.U8 => b[i],
                _ => b[i] != 0 ? 1.0 : 0.0, // BOOL
            };
        }
        return r;
    }

    /// <summary>Converts an integer or BOOL tensor (I64, I32, U8, BOOL) to 64-bit integers.</summary>
    /// <returns>A new array with <see cref="ElementCount"/> values.</returns>
    /// <exception cref="InvalidOperationException">The tensor has a floating-point dtype.</exception>
    public long[] ToInt64()
    {
        ReadOnlySpan<byte> b = _data;
        switch (DType)
        {
            case SafetensorsDType.I64:
                return SafetensorsCodec.FromLittleEndianBytes<long>(b);
            case SafetensorsDType.I32:
            {
                var r = new long[b.Length / 4];
                for (int i = 0; i < r.Length; i++)
                {
                    r[i] = BinaryPrimitives.ReadInt32LittleEndian(b[(4 * i)..]);
                }
                return r;
            }
            case SafetensorsDType.U8:
            case SafetensorsDType.BOOL:
            {
                var r = new long[b.Length];
                bool isBool = DType == SafetensorsDType.BOOL;
                for (int i = 0; i < r.Length; i++)
                {
                    r[i] = isBool ? (b[i] != 0 ? 1 : 0) : b[i];
                }
                return r;
            }
            default:
                throw new InvalidOperationException(
                    $"Tensor '{Name}' has floating-point dtype {DType.ToJsonName()}; use ToFloat32/ToFloat64 instead of ToInt64.");
        }
    }

    /// <summary>Returns the values of an F16 tensor.</summary>
    /// <returns>A new array with <see cref="ElementCount"/> values.</returns>
    /// <exception cref="InvalidOperationException">The dtype is not F16.</exception>
    public Half[] ToFloat16()
    {
        RequireDType(SafetensorsDType.F16, nameof(ToFloat16));
        return SafetensorsCodec.FromLittleEndianBytes<Half>(_data);
    }

    /// <summary>Returns the raw bit patterns of a BF16 tensor.</summary>
    /// <returns>A new array with <see cref="ElementCount"/> values.</returns>
    /// <exception cref="InvalidOperationException">The dtype is not BF16.</exception>
    public ushort[] ToBFloat16Bits()
    {
        RequireDType(SafetensorsDType.BF16, nameof(ToBFloat16Bits));
        return SafetensorsCodec.FromLittleEndianBytes<ushort>(_data);
    }

    /// <summary>Returns the values of a BOOL tensor (any non-zero byte is <see langword="true"/>).</summary>
    /// <returns>A new array with <see cref="ElementCount"/> values.</returns>
    /// <exception cref="InvalidOperationException">The dtype is not BOOL.</exception>
    public bool[] ToBoolean()
    {
        RequireDType(SafetensorsDType.BOOL, nameof(ToBoolean));
        var r = new bool[_data.Length];
        for (int i = 0; i < r.Length; i++)
        {
            r[i] = _data[i] != 0;
        }
        return r;
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name}: {DType.ToJsonName()}[{string.Join(",", _shape)}]";

    private void RequireDType(SafetensorsDType expected, string method)
    {
        if (DType != expected)
        {
            throw new InvalidOperationException(
                $"Tensor '{Name}' has dtype {DType.ToJsonName()}; {method} requires {expected.ToJsonName()}.");
        }
    }

    private static SafetensorsTensor Create<T>(string name, SafetensorsDType dtype, T[] data, int[] shape) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(shape);
        long bytes = SafetensorsCodec.CheckedByteLength(shape, dtype, nameof(shape));
        long count = bytes / dtype.ElementSize();
        if (count != data.Length)
        {
            throw new ArgumentException(
                $"Tensor '{name}': shape [{string.Join(",", shape)}] has {count} elements, but {data.Length} values were given.",
                nameof(data));
        }
        return new SafetensorsTensor(name, dtype, shape, SafetensorsCodec.ToLittleEndianBytes<T>(data), copyShape: true);
    }
}
