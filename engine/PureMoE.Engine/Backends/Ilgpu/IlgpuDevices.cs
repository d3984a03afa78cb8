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

    // True once CudaDriverLoader's resolver is on ILGPU's assembly (false when the application had set its own).
    private static bool s_driverResolver;

    private static Context CreateContext()
    {
        // ILGPU's CUDA bindings load on first use: the resolver goes first, so a driver-only machine is found too.
        s_driverResolver = CudaDriverLoader.Install();
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

    /// <summary>
    /// A new ILGPU CPU accelerator shaped like a CUDA GPU (32-lane warps, 256-thread groups, one multiprocessor), so
    /// that the backend takes the paths it takes on a GPU (the 64×64 and 128×128 SGEMMs, grouped GEMMs): the
    /// accelerator of <see cref="DeviceKind.IlgpuWide"/>.
    /// </summary>
    private static Accelerator CreateCudaShapedCpu(Context context) =>
        new CPUDevice(numThreadsPerWarp: 32, numWarpsPerMultiprocessor: 8, numMultiprocessors: 1).CreateCPUAccelerator(context);

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

    /// <summary>
    /// Why no CUDA device may show although a GPU is there: ILGPU 1.5.3 opens the driver as plain libcuda.so, which
    /// only the driver's development package links; a machine with the driver alone has libcuda.so.1. Empty when
    /// that is not the case (no driver at all, or libcuda.so loads). Only needed where <see cref="CudaDriverLoader"/>
    /// could not be installed (the application had its own resolver for ILGPU).
    /// </summary>
    internal static string CudaDriverHint(bool plainLoads, bool versionedLoads) => !plainLoads && versionedLoads
        ? ". The NVIDIA driver is here as libcuda.so.1 only, and ILGPU opens libcuda.so: link it in a folder of your own and put " +
          "that folder on LD_LIBRARY_PATH, e.g. d=$(mktemp -d); ln -s \"$(ldconfig -p | awk '/libcuda\\.so\\.1 /{print $NF; exit}')\" $d/libcuda.so; " +
          "export LD_LIBRARY_PATH=$d:$LD_LIBRARY_PATH"
        : "";

    private static bool Loads(string library)
    {
        if (!System.Runtime.InteropServices.NativeLibrary.TryLoad(library, out var handle)) return false;
        System.Runtime.InteropServices.NativeLibrary.Free(handle);
        return true;
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

    /// <summary>
    /// True when ILGPU says <paramref name="from"/>'s accelerator can read and write <paramref name="to"/>'s memory
    /// directly (CUDA peer access between GPUs; ILGPU also reports it between its CPU accelerators, which share host
    /// memory). False for the same device, host devices and accelerators of different kinds.
    /// </summary>
    public static bool CanAccessPeer(Device from, Device to)
    {
        ArgumentNullException.ThrowIfNull(from);
        ArgumentNullException.ThrowIfNull(to);
        if (from.Equals(to) || !from.IsIlgpu || !to.IsIlgpu) return false;
        return AcceleratorOf(from).CanAccessPeer(AcceleratorOf(to));
    }

    /// <summary>
    /// Enables peer access in both directions between two ILGPU devices (once; later calls are no-ops). Returns
    /// false, changing nothing, where <see cref="CanAccessPeer"/> is false either way.
    /// </summary>
    public static bool EnablePeerAccess(Device a, Device b)
    {
        if (!CanAccessPeer(a, b) || !CanAccessPeer(b, a)) return false;
        Accelerator x = AcceleratorOf(a), y = AcceleratorOf(b);
        lock (x)
        {
            if (x.HasPeerAccess(y) && y.HasPeerAccess(x)) return true;
            return x.EnableBidirectionalPeerAccess(y);
        }
    }

    /// <summary>
    /// A direct device-to-device copy of <paramref name="source"/> (on an ILGPU device) into a new contiguous buffer
    /// on <paramref name="target"/> (another ILGPU device), without passing through host memory: one copy queued on
    /// the source's stream after the work that produced the data, waited for before returning so the target can
    /// use it on its own stream. Not recorded for autograd. Enable peer access first for the fast path on GPUs.
    /// </summary>
    public static Tensor PeerCopy(Tensor source, Device target)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(target);
        if (!source.Device.IsIlgpu || !target.IsIlgpu || source.Device.Equals(target))
            throw new ArgumentException($"PeerCopy: needs two different ILGPU devices, got {source.Device} → {target}");
        Tensor dense;
        using (Autograd.GradMode.NoGrad()) dense = source.Dense();
        var from = (IlgpuStorage)dense.Storage;
        var into = (IlgpuStorage)target.Backend.Allocate(dense.DType, dense.Numel);
        if (dense.Numel > 0)
        {
            // The target's zero fill runs on the target's stream: finish it before the source's stream writes.
            into.Accelerator.DefaultStream.Synchronize();
            // A dense view may start a longer buffer (a leading slice): copy exactly its elements.
            from.Bytes.SubView(0, into.Bytes.Length).CopyTo(from.Accelerator.DefaultStream, into.Bytes);
            from.Accelerator.DefaultStream.Synchronize();
        }
        return new Tensor(into, dense.Shape, target);
    }

    private static Accelerator AcceleratorOf(Device device) => ((IlgpuBackend)device.Backend).Accelerator;

    private static Device Create(DeviceKind kind, int index)
    {
        var context = Context;
        Accelerator accelerator;
        switch (kind)
        {
            case DeviceKind.IlgpuCpu:
                // Every index is a fresh accelerator over the same emulated CPU device: separate memory, separate threads.
                accelerator = context.CreateCPUAccelerator(0);
                break;
            case DeviceKind.IlgpuWide:
                accelerator = CreateCudaShapedCpu(context);
                break;
            case DeviceKind.Cuda:
            {
                int count = context.GetCudaDevices().Count;
                if (index >= count)
                    throw new InvalidOperationException(
                        $"Device.Cuda({index}): this machine has {count} CUDA device(s) visible to ILGPU; ILGPU devices here: {Describe()}" +
                        (count == 0 && !s_driverResolver ? CudaDriverHint(Loads("libcuda.so"), Loads("libcuda.so.1")) : ""));
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
