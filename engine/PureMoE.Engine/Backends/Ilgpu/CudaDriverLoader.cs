using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU;

namespace PureMoE.Backends.Ilgpu;

/// <summary>
/// Lets ILGPU find the NVIDIA driver by the name a driver-only machine has. ILGPU 1.5.3 binds the CUDA driver API with
/// <c>[DllImport("cuda")]</c>, which .NET resolves on Linux as libcuda.so: a link that only the driver's development
/// package installs. A machine with the driver alone (a CUDA container, a cloud GPU image) has libcuda.so.1, the
/// name the CUDA runtime and PyTorch open. A resolver on ILGPU's assembly answers "cuda" with libcuda.so where it
/// loads, else with libcuda.so.1, so <c>Device.Cuda</c> works on both without a hand-made link.
/// </summary>
internal static class CudaDriverLoader
{
    /// <summary>The library name ILGPU's CUDA bindings import on Linux.</summary>
    internal const string IlgpuCudaLibrary = "cuda";

    /// <summary>The driver's names on Linux, in the order they are tried.</summary>
    internal static readonly string[] LinuxNames = ["libcuda.so", "libcuda.so.1"];

    /// <summary>
    /// Installs the resolver on ILGPU's assembly; call before the first ILGPU context (the bindings load on first
    /// use). False when the application had already set a resolver for ILGPU: then that one decides.
    /// </summary>
    public static bool Install()
    {
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(Context).Assembly, Resolve);
            return true;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath) =>
        Resolve(libraryName, OperatingSystem.IsLinux(), TryLoad);

    /// <summary>
    /// The handle to use for <paramref name="libraryName"/>: for ILGPU's "cuda" on Linux the first of
    /// <see cref="LinuxNames"/> that <paramref name="tryLoad"/> opens; otherwise (and when none opens) IntPtr.Zero,
    /// which leaves the name to .NET's default probing.
    /// </summary>
    internal static IntPtr Resolve(string libraryName, bool linux, Func<string, IntPtr> tryLoad)
    {
        if (!linux || libraryName != IlgpuCudaLibrary) return IntPtr.Zero;
        foreach (string name in LinuxNames)
        {
            IntPtr handle = tryLoad(name);
            if (handle != IntPtr.Zero) return handle;
        }
        return IntPtr.Zero;
    }

    private static IntPtr TryLoad(string name) => NativeLibrary.TryLoad(name, out IntPtr handle) ? handle : IntPtr.Zero;
}
