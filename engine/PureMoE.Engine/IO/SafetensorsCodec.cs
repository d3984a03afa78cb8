using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PureMoE.IO;

/// <summary>Low-level helpers shared by the safetensors reader and writer.</summary>
internal static class SafetensorsCodec
{
    /// <summary>
    /// Multiplies the dimensions left to right with overflow checking (like the reference
    /// implementation's <c>try_fold(checked_mul)</c>). Dimensions must already be non-negative.
    /// </summary>
    /// <returns><see langword="false"/> when the product overflows <see cref="long"/>.</returns>
    public static bool TryGetElementCount(ReadOnlySpan<long> dims, out long count)
    {
        long product = 1;
        foreach (long d in dims)
        {
            if (d != 0 && product > long.MaxValue / d)
            {
                count = 0;
                return false;
            }
            product *= d;
        }
        count = product;
        return true;
    }

    /// <summary>Overflow-checked <c>count * elementSize</c>.</summary>
    public static bool TryGetByteLength(long count, int elementSize, out long bytes)
    {
        if (count > long.MaxValue / elementSize)
        {
            bytes = 0;
            return false;
        }
        bytes = count * elementSize;
        return true;
    }

    /// <summary>
    /// Validates a shape and returns its byte length for <paramref name="dtype"/>; throws
    /// <see cref="ArgumentException"/> for negative dimensions or overflow.
    /// </summary>
    public static long CheckedByteLength(ReadOnlySpan<int> shape, SafetensorsDType dtype, string paramName)
    {
        Span<long> dims = shape.Length <= 16 ? stackalloc long[shape.Length] : new long[shape.Length];
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] < 0)
            {
                throw new ArgumentException($"Shape dimension {i} is negative ({shape[i]}).", paramName);
            }
            dims[i] = shape[i];
        }
        if (!TryGetElementCount(dims, out long count) || !TryGetByteLength(count, dtype.ElementSize(), out long bytes))
        {
            throw new ArgumentException($"Shape [{string.Join(",", shape.ToArray())}] overflows the element count.", paramName);
        }
        return bytes;
    }

    /// <summary>Copies values into a new little-endian byte array.</summary>
    public static byte[] ToLittleEndianBytes<T>(ReadOnlySpan<T> values) where T : unmanaged
    {
        byte[] bytes = MemoryMarshal.AsBytes(values).ToArray();
        if (!BitConverter.IsLittleEndian)
        {
            ReverseEachElement(bytes, Unsafe.SizeOf<T>());
        }
        return bytes;
    }

    /// <summary>Decodes little-endian bytes (length must be a multiple of the element size).</summary>
    public static T[] FromLittleEndianBytes<T>(ReadOnlySpan<byte> bytes) where T : unmanaged
    {
        int size = Unsafe.SizeOf<T>();
        var result = GC.AllocateUninitializedArray<T>(bytes.Length / size); // every byte is written below
        Span<byte> dest = MemoryMarshal.AsBytes(result.AsSpan());
        bytes[..dest.Length].CopyTo(dest);
        if (!BitConverter.IsLittleEndian)
        {
            ReverseEachElement(dest, size);
        }
        return result;
    }

    private static void ReverseEachElement(Span<byte> bytes, int size)
    {
        if (size == 1)
        {
            return;
        }
        for (int i = 0; i + size <= bytes.Length; i += size)
        {
            bytes.Slice(i, size).Reverse();
        }
    }

    /// <summary>
    /// Converts a float to bfloat16 bits with round-to-nearest-even. NaN stays a (quiet) NaN with the
    /// same sign; infinities stay infinities; values beyond the bfloat16 range round to infinity.
    /// </summary>
    public static ushort FloatToBFloat16Bits(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
        {
            return (ushort)((bits >> 16) | 0x0040);
        }
        uint lsb = (bits >> 16) & 1;
        return (ushort)((bits + 0x7FFFu + lsb) >> 16);
    }

    /// <summary>Widens bfloat16 bits to a float (exact).</summary>
    public static float BFloat16BitsToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);
}
