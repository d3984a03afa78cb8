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
        foreach (string name in file.Names) result[name] = file.Read(name).ToTensor(device);
        return result;
    }

    /// <summary>Writes named tensors to a safetensors file atomically (temp file, then rename).</summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        SafetensorsWriter.Write(path, tensors.Select(kv => kv.Value.ToSafetensors(kv.Key)), metadata);
}
