namespace PureMoE.Moe.Routing;

/// <summary>
/// Brings several tensors to the host in one device→host read. On an ILGPU device every read waits for all the
/// queued work (a synchronisation), so a router that must decide on the host (capacity, slots, dispatch sizes)
/// packs everything its decision needs into this one read. On host devices it is a plain copy per tensor.
/// </summary>
internal static class HostRead
{
    /// <summary>
    /// The elements of each tensor as double[] (row-major), read together. On an ILGPU device they travel as one
    /// float32 vector: float32 values come back exactly; int64 values (expert ids) exactly below 2²⁴.
    /// </summary>
    public static double[][] Doubles(params Tensor[] tensors)
    {
        if (tensors.Length == 0) return [];
        var device = tensors[0].Device;
        if (device.IsHost || tensors.Length == 1) return [.. tensors.Select(t => t.ToDoubleArray())];
        using var _ = Tensor.NoGrad();
        var parts = tensors.Select(t => (t.DType == DType.Float32 ? t : t.To(DType.Float32)).Reshape(t.Numel)).ToArray();
        float[] all = Tensor.Concat(parts, 0).ToFloatArray();
        var result = new double[tensors.Length][];
        int at = 0;
        for (int i = 0; i < tensors.Length; i++)
        {
            var r = result[i] = new double[tensors[i].Numel];
            for (int j = 0; j < r.Length; j++) r[j] = all[at + j];
            at += r.Length;
        }
        return result;
    }

    /// <summary>
    /// A constant tensor (no gradient) from host values, in <paramref name="like"/>'s dtype on its device: converted
    /// on the host, then uploaded (ILGPU devices hold no float64).
    /// </summary>
    public static Tensor Constant(double[] data, int[] shape, Tensor like) =>
        Tensor.FromHost(data, shape, Device.Cpu).To(like.DType).To(like.Device);
}
