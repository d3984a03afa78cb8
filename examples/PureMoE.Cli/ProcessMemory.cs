using System.Diagnostics;
using System.Runtime;

namespace PureMoE.Cli;

/// <summary>The process's resident memory: the peaks <c>train</c> prints and <c>compare</c> tabulates per run.</summary>
internal static class ProcessMemory
{
    /// <summary>The most memory the process has had resident (VmHWM on Linux) since it started or since <see cref="TryResetPeak"/>.</summary>
    public static long PeakResidentBytes
    {
        get
        {
            using var self = Process.GetCurrentProcess();
            return self.PeakWorkingSet64;
        }
    }

    /// <summary>
    /// Collects all garbage (compacting the large-object heap, so the last run's arrays are gone) and starts the peak
    /// again from what is resident now, so that the next peak is the next run's. Linux only (it writes 5 to
    /// /proc/self/clear_refs); false where that cannot be done, and the peak stays the process's.
    /// </summary>
    public static bool TryResetPeak()
    {
        if (!OperatingSystem.IsLinux()) return false;
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
