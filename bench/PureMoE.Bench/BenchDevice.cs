using System.Diagnostics;
using PureMoE.Backends.Ilgpu;

namespace PureMoE.Bench;

/// <summary>
/// The `--device` option of the quick commands (the engine's <see cref="Device.Parse"/> forms: cpu, cuda[:N],
/// ilgpu-cpu[:N], ilgpu-wide[:N], opencl[:N]), and the one place that waits for a device's queued work and times device work.
/// </summary>
internal static class BenchDevice
{
    /// <summary>
    /// The device named <paramref name="text"/> (<see cref="Device.Parse"/>; <c>ilgpu-wide</c>, the emulator shaped
    /// like a CUDA GPU, counts a GPU step's launches without a GPU).
    /// </summary>
    public static Device Parse(string text)
    {
        try { return Device.Parse(text); }
        catch (ArgumentException e) { throw new ArgumentException($"--device {text}: {e.Message.Split(" (Parameter", 2)[0]}"); }
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

    /// <summary>
    /// Times <paramref name="once"/> on an ILGPU backend: at least <paramref name="warmup"/> untimed calls (and, with
    /// <paramref name="warmupSeconds"/>, at least that long: kernels compile on first use), then <paramref name="repeats"/>
    /// calls each timed from launch to the end of a device synchronisation. Returns the median and the minimum in ms.
    /// </summary>
    public static (double MedianMs, double MinMs) TimeSynced(IlgpuBackend backend, Action once, int warmup, int repeats, double warmupSeconds = 0) =>
        Time(once, backend.Synchronize, warmup, repeats, warmupSeconds);

    /// <summary>
    /// <see cref="TimeSynced"/> for any device: on a host device the calls run synchronously, so nothing is waited for.
    /// </summary>
    public static (double MedianMs, double MinMs) Time(Device device, Action once, int warmup, int repeats, double warmupSeconds = 0) =>
        Time(once, () => Sync(device), warmup, repeats, warmupSeconds);

    private static (double MedianMs, double MinMs) Time(Action once, Action wait, int warmup, int repeats, double warmupSeconds)
    {
        long warmStart = Stopwatch.GetTimestamp();
        for (int i = 0; i < warmup || Stopwatch.GetElapsedTime(warmStart).TotalSeconds < warmupSeconds; i++)
        {
            once();
            wait();
        }

        var times = new double[repeats];
        for (int i = 0; i < repeats; i++)
        {
            long start = Stopwatch.GetTimestamp();
            once();
            wait();
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }

        return (Median(times), times.Min());
    }

    /// <summary>The median of <paramref name="values"/> (the mean of the middle two for an even count).</summary>
    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        int n = sorted.Length;
        return n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    }
}
