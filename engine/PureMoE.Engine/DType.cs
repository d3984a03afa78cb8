namespace PureMoE;

/// <summary>Element type of a tensor.</summary>
public enum DType
{
    /// <summary>32-bit IEEE float: the working type everywhere.</summary>
    Float32,
    /// <summary>64-bit IEEE float: CPU only, used by gradient checks and reference computations.</summary>
    Float64,
    /// <summary>64-bit signed integer: indices (token ids, expert ids, top-k and argsort results).</summary>
    Int64,
}

/// <summary>Helpers on <see cref="DType"/>.</summary>
public static class DTypeExtensions
{
    /// <summary>Bytes per element.</summary>
    public static int SizeInBytes(this DType dtype) => dtype switch
    {
        DType.Float32 => 4,
        DType.Float64 => 8,
        DType.Int64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>True for the floating-point types (the ones gradients flow through).</summary>
    public static bool IsFloatingPoint(this DType dtype) => dtype is DType.Float32 or DType.Float64;

    /// <summary>The lower-case name used in error messages, like PyTorch's (float32, float64, int64).</summary>
    public static string Name(this DType dtype) => dtype switch
    {
        DType.Float32 => "float32",
        DType.Float64 => "float64",
        DType.Int64 => "int64",
        _ => dtype.ToString(),
    };
}
