using System.Runtime.InteropServices;
using PureMoE.Backends;

namespace PureMoE.IO;

/// <summary>
/// Converts between engine tensors and safetensors entries, and loads or saves whole named sets of tensors.
/// F16/BF16 load as float32 and I32/U8/BOOL as int64 (the engine's dtypes); saving writes each tensor's own dtype.
/// </summary>
public static class TensorIO
{
    /// <summary>The engine tensor of a safetensors entry (float types → float32 unless F64; integers → int64).</summary>
    public static Tensor ToTensor(this SafetensorsTensor entry, Device? device = null)
    {
        int[] shape = entry.Shape;
        return entry.DType switch
        {
            SafetensorsDType.F64 => Tensor.FromHost(entry.ToFloat64(), shape, device),
            SafetensorsDType.F32 or SafetensorsDType.F16 or SafetensorsDType.BF16 => Tensor.FromHost(entry.ToFloat32(), shape, device),
            _ => Tensor.FromHost(entry.ToInt64(), shape, device),
        };
    }

    /// <summary>A safetensors entry holding this tensor's values under <paramref name="name"/>.</summary>
    public static SafetensorsTensor ToSafetensors(this Tensor tensor, string name)
    {
        int[] shape = tensor.Shape.ToArray();
        return tensor.DType switch
        {
            DType.Float32 => SafetensorsTensor.FromFloat32(name, tensor.ToArray<float>(), shape),
            DType.Float64 => SafetensorsTensor.FromFloat64(name, tensor.ToArray<double>(), shape),
            _ => SafetensorsTensor.FromInt64(name, tensor.ToArray<long>(), shape),
        };
    }

    /// <summary>Reads every tensor of a safetensors file (validated before anything is returned).</summary>
    public static Dictionary<string, Tensor> Load(string path, Device? device = null)
    {
        using var file = SafetensorsFile.Open(path);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (string name in file.Names) result[name] = device is null ? file.ReadTensor(name) : file.ReadTensor(name).To(device);
        return result;
    }

    /// <summary>
    /// Writes named tensors to a safetensors file atomically (temp file, then rename). Each tensor's data goes to the
    /// file as the file is written, from the tensor's own memory when it is a contiguous host tensor, so saving holds
    /// no copy of the whole set.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        SafetensorsWriter.WriteEntries(path, tensors.Select(kv => Entry(kv.Key, kv.Value)), metadata);
    }

    /// <summary>
    /// The writer's entry for <paramref name="tensor"/> under <paramref name="name"/>, stored as
    /// <paramref name="saveAs"/> (default: its own dtype); nothing is read or converted until the writer asks for the data.
    /// </summary>
    internal static SafetensorsEntry Entry(string name, Tensor tensor, DType? saveAs = null)
    {
        ArgumentNullException.ThrowIfNull(tensor, name);
        DType dtype = saveAs ?? tensor.DType;
        var fileType = dtype switch
        {
            DType.Float32 => SafetensorsDType.F32,
            DType.Float64 => SafetensorsDType.F64,
            _ => SafetensorsDType.I64,
        };
        return new SafetensorsEntry(name, fileType, tensor.Shape.ToArray(), (long)tensor.Numel * dtype.SizeInBytes(),
            stream => WriteData(stream, name, tensor, dtype));
    }

    // The elements in row-major order as little-endian bytes: straight from the array of a contiguous host tensor,
    // otherwise through one host copy of this tensor.
    private static void WriteData(Stream stream, string name, Tensor tensor, DType dtype)
    {
        using var _ = Autograd.GradMode.NoGrad();
        if (tensor.DType != dtype) tensor = tensor.To(dtype);
        if (!BitConverter.IsLittleEndian)
        {
            stream.Write(tensor.ToSafetensors(name).Data.Span);
            return;
        }
        var t = tensor.Device.IsHost ? tensor.Contiguous() : tensor;
        if (t.Device.IsHost && t.Storage is CpuStorage host)
        {
            stream.Write(host.Data switch
            {
                float[] f => MemoryMarshal.AsBytes(f.AsSpan(t.Offset, t.Numel)),
                double[] d => MemoryMarshal.AsBytes(d.AsSpan(t.Offset, t.Numel)),
                long[] l => MemoryMarshal.AsBytes(l.AsSpan(t.Offset, t.Numel)),
                _ => throw new NotSupportedException($"TensorIO: tensor '{name}' has an unsupported host array"),
            });
            return;
        }
        stream.Write(t.DType switch
        {
            DType.Float32 => MemoryMarshal.AsBytes(t.ToArray<float>().AsSpan()),
            DType.Float64 => MemoryMarshal.AsBytes(t.ToArray<double>().AsSpan()),
            _ => MemoryMarshal.AsBytes(t.ToArray<long>().AsSpan()),
        });
    }
}
