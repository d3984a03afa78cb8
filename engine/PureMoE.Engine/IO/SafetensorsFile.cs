using System.Buffers.Binary;
using System.Collections.ObjectModel;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using PureMoE.Backends;

namespace PureMoE.IO;

/// <summary>
/// A read-only, fully validated safetensors file. <see cref="Open"/> reads and validates the whole
/// header up front (returning only a completely valid file, or throwing
/// <see cref="SafetensorsFormatException"/> and releasing the file); tensor data is then read on
/// demand from a read-only memory mapping of the file.
/// </summary>
/// <remarks>
/// Concurrent <see cref="Read"/> calls are safe; calls concurrent with <see cref="Dispose"/> are not.
/// The file is opened with <see cref="FileShare.Read"/>; truncating it from outside while it is open
/// is not supported (a memory-mapped read past the new end faults).
/// Validation is slightly more lenient than the reference implementation in one respect: byte
/// ranges must lie inside the data buffer and must not overlap, but gaps between them and unused
/// trailing bytes are accepted (the reference requires the ranges to tile the buffer exactly).
/// </remarks>
public sealed unsafe class SafetensorsFile : IDisposable
{
    private readonly SafetensorsHeader _header;
    private readonly ReadOnlyCollection<string> _names;
    private readonly ReadOnlyDictionary<string, string> _metadata;
    private readonly long _dataStart;
    private MemoryMappedFile? _map;
    private MemoryMappedViewAccessor? _view;
    private byte* _base; // start of the mapped file (view pointer + PointerOffset)
    private bool _disposed;

    private SafetensorsFile(string path, SafetensorsHeader header, long dataStart, long dataLength)
    {
        FilePath = path;
        _header = header;
        _dataStart = dataStart;
        DataLength = dataLength;
        _names = Array.AsReadOnly(header.Tensors.Keys.Order(StringComparer.Ordinal).ToArray());
        _metadata = new ReadOnlyDictionary<string, string>(header.Metadata);
    }

    /// <summary>Full path of the opened file.</summary>
    public string FilePath { get; }

    /// <summary>Tensor names, sorted ordinally.</summary>
    public IReadOnlyList<string> Names => _names;

    /// <summary>The <c>__metadata__</c> string map (empty when the file has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata => _metadata;

    /// <summary>Size in bytes of the data buffer that follows the header.</summary>
    public long DataLength { get; }

    /// <summary>
    /// Opens and validates a safetensors file. Validation covers the header length, UTF-8/JSON
    /// well-formedness, every entry's dtype/shape/data_offsets, overflow, sizes, overlapping ranges
    /// and the metadata map.
    /// </summary>
    /// <param name="path">Path of the file.</param>
    /// <returns>The open file; dispose it to release the mapping.</returns>
    /// <exception cref="SafetensorsFormatException">The file is not a valid safetensors file.</exception>
    /// <exception cref="IOException">The file cannot be opened or read.</exception>
    public static SafetensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string fullPath = Path.GetFullPath(path);
        var stream = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.RandomAccess);
        SafetensorsFile? file = null;
        try
        {
            long fileLength = stream.Length;
            if (fileLength < 8)
            {
                throw new SafetensorsFormatException(fullPath,
                    $"file is too short: {fileLength} bytes, but at least 8 bytes (the header length) are required");
            }
            Span<byte> lengthBytes = stackalloc byte[8];
            ReadExactly(stream, lengthBytes, fullPath);
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
            if (headerLength > SafetensorsHeader.MaxHeaderBytes)
            {
                throw new SafetensorsFormatException(fullPath,
                    $"header length {headerLength} exceeds the 100 MB limit ({SafetensorsHeader.MaxHeaderBytes} bytes)");
            }
            if (headerLength > (ulong)(fileLength - 8))
            {
                throw new SafetensorsFormatException(fullPath,
                    $"header length {headerLength} exceeds the remaining file size ({fileLength - 8} bytes)");
            }

            var headerBytes = new byte[(int)headerLength];
            ReadExactly(stream, headerBytes, fullPath);
            long dataStart = 8 + (long)headerLength;
            long dataLength = fileLength - dataStart;
            SafetensorsHeader header = SafetensorsHeader.Parse(headerBytes, dataLength, fullPath);

            file = new SafetensorsFile(fullPath, header, dataStart, dataLength);
            if (dataLength > 0)
            {
                // The mapping owns the stream from here on (leaveOpen: false).
                file._map = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0,
                    MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
                stream = null;
                file._view = file._map.CreateViewAccessor(0, fileLength, MemoryMappedFileAccess.Read);
                byte* p = null;
                file._view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
                file._base = p + file._view.PointerOffset;
            }
            else
            {
                // Nothing to map (every tensor is empty): don't map at all.
                stream.Dispose();
                stream = null;
            }
            SafetensorsFile result = file;
            file = null;
            return result;
        }
        finally
        {
            file?.Dispose();
            stream?.Dispose();
        }
    }

    /// <summary>Whether the file contains a tensor called <paramref name="name"/>.</summary>
    /// <param name="name">Tensor name.</param>
    /// <returns><see langword="true"/> if present.</returns>
    public bool Contains(string name) => _header.Tensors.ContainsKey(name);

    /// <summary>Returns the validated header information of a tensor.</summary>
    /// <param name="name">Tensor name.</param>
    /// <returns>Dtype, shape and byte range.</returns>
    /// <exception cref="KeyNotFoundException">No tensor has that name.</exception>
    public SafetensorsTensorInfo GetInfo(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!_header.Tensors.TryGetValue(name, out SafetensorsTensorInfo? info))
        {
            throw new KeyNotFoundException($"Safetensors file '{FilePath}' has no tensor named '{name}'.");
        }
        return info;
    }

    /// <summary>Reads a tensor's bytes into a new <see cref="SafetensorsTensor"/>.</summary>
    /// <param name="name">Tensor name.</param>
    /// <returns>The tensor (its data is a private copy).</returns>
    /// <exception cref="KeyNotFoundException">No tensor has that name.</exception>
    /// <exception cref="NotSupportedException">The tensor is larger than a .NET array can hold.</exception>
    /// <exception cref="ObjectDisposedException">The file has been disposed.</exception>
    public SafetensorsTensor Read(string name)
    {
        SafetensorsTensorInfo info = GetInfo(name);
        ReadOnlySpan<byte> data = MappedData(info);
        var bytes = data.Length == 0 ? [] : GC.AllocateUninitializedArray<byte>(data.Length);
        data.CopyTo(bytes);
        return new SafetensorsTensor(info.Name, info.DType, info.Shape, bytes, copyShape: false);
    }

    /// <summary>
    /// Reads a tensor from the mapping straight into a new host tensor: F32, F64 and I64 with one copy (a
    /// <see cref="Read"/> followed by <see cref="TensorIO.ToTensor"/> makes two), the other dtypes converted as
    /// <see cref="TensorIO.ToTensor"/> converts them.
    /// </summary>
    internal Tensor ReadTensor(string name)
    {
        SafetensorsTensorInfo info = GetInfo(name);
        ReadOnlySpan<byte> data = MappedData(info);
        return info.DType switch
        {
            SafetensorsDType.F32 => Tensor.FromHost(SafetensorsCodec.FromLittleEndianBytes<float>(data), info.Shape, null),
            SafetensorsDType.F64 => Tensor.FromHost(SafetensorsCodec.FromLittleEndianBytes<double>(data), info.Shape, null),
            SafetensorsDType.I64 => Tensor.FromHost(SafetensorsCodec.FromLittleEndianBytes<long>(data), info.Shape, null),
            _ => Read(name).ToTensor(),
        };
    }

    /// <summary>
    /// Reads a tensor into <paramref name="target"/> (same shape), in place: a contiguous host tensor of the file's
    /// dtype takes the bytes straight from the mapping, anything else goes through <see cref="ReadTensor"/> and
    /// <see cref="Tensor.CopyFrom"/> (converting dtype and device).
    /// </summary>
    internal void ReadInto(string name, Tensor target)
    {
        SafetensorsTensorInfo info = GetInfo(name);
        if (BitConverter.IsLittleEndian && target.Device.IsHost && target.IsContiguous && target.Storage is CpuStorage host
            && info.ElementCount == target.Numel)
        {
            Span<byte> destination = (info.DType, host.Data) switch
            {
                (SafetensorsDType.F32, float[] f) => MemoryMarshal.AsBytes(f.AsSpan(target.Offset, target.Numel)),
                (SafetensorsDType.F64, double[] d) => MemoryMarshal.AsBytes(d.AsSpan(target.Offset, target.Numel)),
                (SafetensorsDType.I64, long[] l) => MemoryMarshal.AsBytes(l.AsSpan(target.Offset, target.Numel)),
                _ => [],
            };
            if (destination.Length == info.ByteLength && destination.Length > 0)
            {
                MappedData(info).CopyTo(destination);
                return;
            }
        }
        target.CopyFrom(ReadTensor(name));
    }

    // The bytes of a tensor inside the mapping (valid until Dispose).
    private ReadOnlySpan<byte> MappedData(SafetensorsTensorInfo info)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (info.ByteLength > Array.MaxLength)
        {
            throw new NotSupportedException(
                $"Tensor '{info.Name}' in '{FilePath}' is {info.ByteLength} bytes, more than a single .NET array can hold.");
        }
        return info.ByteLength == 0 ? [] : new ReadOnlySpan<byte>(_base + _dataStart + info.DataBegin, (int)info.ByteLength);
    }

    /// <summary>Reads a tensor and converts it to floats (see <see cref="SafetensorsTensor.ToFloat32"/>).</summary>
    /// <param name="name">Tensor name.</param>
    /// <returns>The values in row-major order.</returns>
    public float[] ReadFloat32(string name) => Read(name).ToFloat32();

    /// <summary>Reads an integer/BOOL tensor as 64-bit integers (see <see cref="SafetensorsTensor.ToInt64"/>).</summary>
    /// <param name="name">Tensor name.</param>
    /// <returns>The values in row-major order.</returns>
    public long[] ReadInt64(string name) => Read(name).ToInt64();

    /// <summary>Releases the memory mapping and the file handle.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        if (_view is not null)
        {
            if (_base != null)
            {
                _view.SafeMemoryMappedViewHandle.ReleasePointer();
                _base = null;
            }
            _view.Dispose();
            _view = null;
        }
        _map?.Dispose();
        _map = null;
    }

    private static void ReadExactly(FileStream stream, Span<byte> buffer, string path)
    {
        try
        {
            stream.ReadExactly(buffer);
        }
        catch (EndOfStreamException ex)
        {
            throw new SafetensorsFormatException(path, "file ended unexpectedly while reading the header", ex);
        }
    }
}
