namespace PureMoE.IO;

/// <summary>
/// Element types supported by the safetensors reader and writer. The member names are exactly the
/// strings used in the JSON header (<c>"F32"</c>, <c>"BOOL"</c>, ...).
/// </summary>
public enum SafetensorsDType
{
    /// <summary>IEEE 754 binary32 (4 bytes).</summary>
    F32,

    /// <summary>IEEE 754 binary64 (8 bytes).</summary>
    F64,

    /// <summary>IEEE 754 binary16 (2 bytes).</summary>
    F16,

    /// <summary>bfloat16: the upper 16 bits of a binary32 (2 bytes).</summary>
    BF16,

    /// <summary>Signed 64-bit integer (8 bytes).</summary>
    I64,

    /// <summary>Signed 32-bit integer (4 bytes).</summary>
    I32,

    /// <summary>Unsigned 8-bit integer (1 byte).</summary>
    U8,

    /// <summary>Boolean stored as one byte (0 = false, anything else = true).</summary>
    BOOL,
}

/// <summary>Helpers for <see cref="SafetensorsDType"/>.</summary>
public static class SafetensorsDTypeExtensions
{
    /// <summary>Size of one element in bytes.</summary>
    /// <param name="dtype">The element type.</param>
    /// <returns>1, 2, 4 or 8.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a defined member.</exception>
    public static int ElementSize(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.F32 => 4,
        SafetensorsDType.F64 => 8,
        SafetensorsDType.F16 => 2,
        SafetensorsDType.BF16 => 2,
        SafetensorsDType.I64 => 8,
        SafetensorsDType.I32 => 4,
        SafetensorsDType.U8 => 1,
        SafetensorsDType.BOOL => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown safetensors dtype."),
    };

    /// <summary>The dtype string used in the safetensors JSON header.</summary>
    /// <param name="dtype">The element type.</param>
    /// <returns>For example <c>"F32"</c> or <c>"BOOL"</c>.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a defined member.</exception>
    public static string ToJsonName(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.F32 => "F32",
        SafetensorsDType.F64 => "F64",
        SafetensorsDType.F16 => "F16",
        SafetensorsDType.BF16 => "BF16",
        SafetensorsDType.I64 => "I64",
        SafetensorsDType.I32 => "I32",
        SafetensorsDType.U8 => "U8",
        SafetensorsDType.BOOL => "BOOL",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown safetensors dtype."),
    };

    /// <summary>
    /// Parses a header dtype string. Matching is exact and case-sensitive (as in the reference
    /// implementation); numeric strings are not accepted.
    /// </summary>
    /// <param name="jsonName">The string from the header, e.g. <c>"BF16"</c>.</param>
    /// <param name="dtype">The parsed value when the method returns <see langword="true"/>.</param>
    /// <returns><see langword="true"/> when <paramref name="jsonName"/> names a supported dtype.</returns>
    public static bool TryParseJsonName(string? jsonName, out SafetensorsDType dtype)
    {
        switch (jsonName)
        {
            case "F32": dtype = SafetensorsDType.F32; return true;
            case "F64": dtype = SafetensorsDType.F64; return true;
            case "F16": dtype = SafetensorsDType.F16; return true;
            case "BF16": dtype = SafetensorsDType.BF16; return true;
            case "I64": dtype = SafetensorsDType.I64; return true;
            case "I32": dtype = SafetensorsDType.I32; return true;
            case "U8": dtype = SafetensorsDType.U8; return true;
            case "BOOL": dtype = SafetensorsDType.BOOL; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>
    /// Rank used by the reference writer to order tensors: it sorts by descending alignment rank,
    /// then by name (this is the Rust <c>Dtype</c> declaration order).
    /// </summary>
    internal static int AlignmentRank(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.BOOL => 0,
        SafetensorsDType.U8 => 1,
        SafetensorsDType.F16 => 7,
        SafetensorsDType.BF16 => 8,
        SafetensorsDType.I32 => 9,
        SafetensorsDType.F32 => 11,
        SafetensorsDType.F64 => 12,
        SafetensorsDType.I64 => 13,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown safetensors dtype."),
    };
}
