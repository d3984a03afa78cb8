using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace PureMoE.Backends.Ilgpu;

/// <summary>
/// The one ILGPU <see cref="Context"/> of the process (created on first use, with ILGPU.Algorithms enabled) and the
/// registry of ILGPU devices: each (kind, index) gets one accelerator, one <see cref="IlgpuBackend"/> and one
/// <see cref="Device"/>, all created lazily and kept for the life of the process.
/// </summary>
public static class IlgpuDevices
{
    private static readonly Lazy<Context> s_context = new(CreateContext, LazyThreadSafetyMode.ExecutionAndPublication);
    private static readonly ConcurrentDictionary<(DeviceKind, int), Lazy<Device>> s_devices = new();

    private static Context CreateContext()
    {
        // Default(): the CPU emulator plus every CUDA and (ILGPU-compatible) OpenCL device found.
        var context = Context.Create(b => b.Default().EnableAlgorithms());
        AppDomain.CurrentDomain.ProcessExit += (_, _) => DisposeAll(context);
        return context;
    }

    private static void DisposeAll(Context context)
    {
        foreach (var d in s_devices.Values)
            if (d.IsValueCreated && d.Value.Backend is IlgpuBackend b) b.Dispose();
        context.Dispose();
    }

    /// <summary>The shared ILGPU context (created on first use).</summary>
    public static Context Context => s_context.Value;

    /// <summary>Number of CUDA devices ILGPU finds (0 without a driver or GPU).</summary>
    public static int CudaCount => Context.GetCudaDevices().Count;

    /// <summary>Number of OpenCL devices ILGPU finds and supports.</summary>
    public static int OpenCLCount => Context.GetCLDevices().Count;

    /// <summary>A one-line list of the ILGPU devices of this machine, for error messages.</summary>
    public static string Describe()
    {
        var names = Context.Devices.Select(d => $"{d.AcceleratorType} '{d.Name}'").ToArray();
        return names.Length == 0 ? "none" : string.Join(", ", names);
    }

    /// <summary>The device of a kind and index, created on first use.</summary>
    internal static Device Get(DeviceKind kind, int index)
    {
        if (index < 0) throw new ArgumentOutOfRangeException(nameof(index), index, $"Device.{kind}: the index must be ≥ 0");
        var lazy = s_devices.GetOrAdd((kind, index), key => new Lazy<Device>(() => Create(key.Item1, key.Item2)));
        try
        {
            return lazy.Value;
        }
        catch
        {
            // Do not cache a failure (the message is the useful part; a later call retries).
            s_devices.TryRemove(new KeyValuePair<(DeviceKind, int), Lazy<Device>>((kind, index), lazy));
            throw;
        }
    }

    private static Device Create(DeviceKind kind, int index)
    {
        var context = Context;
        Accelerator accelerator;
        switch (kind)
        {
            case DeviceKind.IlgpuCpu:
                if (index != 0) throw new ArgumentOutOfRangeException(nameof(index), index, "Device.IlgpuCpu: there is one ILGPU CPU accelerator (index 0)");
                accelerator = context.CreateCPUAccelerator(0);
                break;
            case DeviceKind.Cuda:
            {
                int count = context.GetCudaDevices().Count;
                if (index >= count)
                    throw new InvalidOperationException(
                        $"Device.Cuda({index}): this machine has {count} CUDA device(s) visible to ILGPU; ILGPU devices here: {Describe()}");
                accelerator = context.CreateCudaAccelerator(index);
                break;
            }
            case DeviceKind.OpenCL:
            {
                int count = context.GetCLDevices().Count;
                if (index >= count)
                    throw new InvalidOperationException(
                        $"Device.OpenCL({index}): this machine has {count} OpenCL device(s) that ILGPU supports; ILGPU devices here: {Describe()}");
                accelerator = context.CreateCLAccelerator(index);
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "not an ILGPU device kind");
        }
        return Device.CreateIlgpu(kind, index, new IlgpuBackend(accelerator));
    }
}
