using PureMoE.Backends.Ilgpu;

namespace PureMoE.Bench;

/// <summary>
/// The `--device` option of the quick commands: cpu (default), cuda[:N], ilgpu-cpu, opencl[:N]. Kept private to
/// the bench (the engine may grow its own Device.Parse); also the one place that waits for a device's queued work.
/// </summary>
internal static class BenchDevice
{
    /// <summary>Parses a device name as Device.ToString() writes it ("cuda" means "cuda:0").</summary>
    public static Device Parse(string text)
    {
        string name = text.Trim().ToLowerInvariant();
        int colon = name.IndexOf(':');
        string kind = colon < 0 ? name : name[..colon];
        int index = 0;
        if (colon >= 0 && !int.TryParse(name[(colon + 1)..], out index))
        {
            throw new ArgumentException($"--device {text}: the index after ':' must be an integer");
        }

        return kind switch
        {
            "cpu" when colon < 0 => Device.Cpu,
            "ilgpu-cpu" when colon < 0 => Device.IlgpuCpu,
            "cuda" => Device.Cuda(index),
            "opencl" => Device.OpenCL(index),
            _ => throw new ArgumentException($"--device {text}: expected cpu, cuda[:N], ilgpu-cpu or opencl[:N]"),
        };
    }

    /// <summary>Waits until the device has finished all queued work (a no-op on host devices, which run synchronously).</summary>
    public static void Sync(Device device)
    {
        if (device.Backend is IlgpuBackend b)
        {
            b.Synchronize();
        }
    }

    /// <summary>The accelerator's name, or the processor count for host devices.</summary>
    public static string Describe(Device device) => device.Backend is IlgpuBackend b
        ? $"{b.Accelerator.Name} ({b.Accelerator.AcceleratorType}, {b.Accelerator.NumMultiprocessors} SMs)"
        : $"{Environment.ProcessorCount} threads";
}
