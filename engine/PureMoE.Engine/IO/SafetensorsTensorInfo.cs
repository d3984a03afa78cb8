namespace PureMoE.IO;

/// <summary>Header information of one tensor in a <see cref="SafetensorsFile"/> (already validated).</summary>
public sealed class SafetensorsTensorInfo
{
    private readonly int[] _shape;

    internal SafetensorsTensorInfo(string name, SafetensorsDType dtype, int[] shape, long dataBegin, long dataEnd)
    {
        Name = name;
        DType = dtype;
        _shape = shape;
        DataBegin = dataBegin;
        DataEnd = dataEnd;
    }

    /// <summary>The tensor's name.</summary>
    public string Name { get; }

    /// <summary>The element type.</summary>
    public SafetensorsDType DType { get; }

    /// <summary>A copy of the row-major shape (empty for a scalar).</summary>
    public int[] Shape => (int[])_shape.Clone();

    /// <summary>Number of elements (product of the shape).</summary>
    public long ElementCount => ByteLength / DType.ElementSize();

    /// <summary>Start of the tensor's bytes, relative to the start of the data buffer (after the header).</summary>
    public long DataBegin { get; }

    /// <summary>End (exclusive) of the tensor's bytes, relative to the start of the data buffer.</summary>
    public long DataEnd { get; }

    /// <summary>Number of bytes (<see cref="DataEnd"/> − <see cref="DataBegin"/>).</summary>
    public long ByteLength => DataEnd - DataBegin;

    internal int[] ShapeNoCopy => _shape;

    /// <inheritdoc/>
    public override string ToString() =>
        $"{Name}: {DType.ToJsonName()}[{string.Join(",", _shape)}] bytes [{DataBegin},{DataEnd})";
}
