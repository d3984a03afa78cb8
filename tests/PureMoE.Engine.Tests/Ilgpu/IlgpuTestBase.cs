using PureMoE.Backends;
using PureMoE.Backends.Ilgpu;
using PureMoE.Engine.Tests.Backends;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>
/// ILGPU tests share one collection: a device is used from one thread at a time (like a CUDA stream), and the
/// CPU emulator is slow enough that running its tests side by side would only contend for the two cores.
/// </summary>
[CollectionDefinition("Ilgpu", DisableParallelization = true)]
public sealed class IlgpuCollection;

/// <summary>
/// The device under test. Each test class is written once against this base and instantiated per device kind:
/// ILGPU's CPU emulator (always present) and CUDA device 0 (skipped cleanly where there is none).
/// </summary>
public abstract class IlgpuTestBase
{
    /// <summary>Which ILGPU device the derived class tests.</summary>
    protected abstract DeviceKind Kind { get; }

    /// <summary>The device; skips the test when it does not exist on this machine.</summary>
    protected Device Dev
    {
        get
        {
            if (Kind == DeviceKind.Cuda)
            {
                int count = 0;
                try { count = IlgpuDevices.CudaCount; } catch (Exception) { count = 0; }
                Assert.SkipUnless(count > 0, "no CUDA device on this machine");
                return Device.Cuda(0);
            }
            return CudaShaped ? WideCpu.Device : Device.IlgpuCpu;
        }
    }

    /// <summary>
    /// True to run on the emulator shaped like a CUDA GPU (<see cref="WideCpu"/>: 32-lane warps, 256-thread groups,
    /// the sizes the backend picks on CUDA) instead of Device.IlgpuCpu's 4-lane warps and 16-thread groups.
    /// </summary>
    protected virtual bool CudaShaped => false;

    /// <summary>The backend of <see cref="Dev"/>.</summary>
    protected IlgpuBackend B => (IlgpuBackend)Dev.Backend;

    /// <summary>Tolerance scale: GPUs contract a·b+c into FMAs and use their own exp/log, the emulator runs .NET math.</summary>
    protected double Slack => Kind == DeviceKind.IlgpuCpu ? 1 : 8;

    protected Storage Up(Array a) => B.Upload(a);

    protected float[] DownF(Storage s)
    {
        var r = new float[s.Length];
        B.Download(s, 0, r, r.Length);
        return r;
    }

    protected long[] DownL(Storage s)
    {
        var r = new long[s.Length];
        B.Download(s, 0, r, r.Length);
        return r;
    }

    protected static long[] RandIdx(int n, int max, int seed)
    {
        var rng = new Random(seed);
        var r = new long[n];
        for (int i = 0; i < n; i++) r[i] = rng.Next(max);
        return r;
    }

    protected static readonly PureMoE.Backends.Reference.ReferenceBackend Ref = K.Ref;
}

/// <summary>
/// ILGPU's CPU accelerator shaped like an NVIDIA multiprocessor (32-lane warps, 8 warps: 256-thread groups, one
/// multiprocessor: <see cref="Device.IlgpuWide"/>), for the kernels Device.IlgpuCpu's 16-thread groups cannot run
/// (the 64×64 and 128×128 SGEMMs and the grouped form).
/// </summary>
internal static class WideCpu
{
    /// <summary>The backend.</summary>
    public static IlgpuBackend Backend => (IlgpuBackend)Device.Backend;

    /// <summary>The device (ilgpu-wide).</summary>
    public static Device Device => Device.IlgpuWide;
}

/// <summary>
/// A storage dropped without a scope returns its device buffer from its finalizer, whenever the garbage collector
/// runs it. A test that compares a pool's counters before and after a call first lets every such buffer land.
/// </summary>
internal static class Finalizers
{
    /// <summary>Collects and runs pending finalizers twice (a finalizer can release more finalizable objects).</summary>
    public static void Settle()
    {
        for (int i = 0; i < 2; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
    }
}
