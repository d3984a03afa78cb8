using System.Globalization;
using PureMoE.Backends;
using PureMoE.Backends.Ilgpu;

namespace PureMoE.Bench;

/// <summary>
/// `quick indexadd --device cuda|ilgpu-cpu|opencl`: the ILGPU backend's IndexAdd primitive (float32,
/// dst [outer, axis, inner] += src [outer, count, inner] at random rows), the backward of IndexSelect and of the
/// MoE dispatch gather. By default the backend picks its path (a direct scan for small problems, else sort-based);
/// --direct forces the direct O(axis·inner·count) kernel, --sorted the sort-based one, to compare them. Protocol as
/// `quick gemm`: `warmup` untimed calls (compilation happens there), then the median of `repeats` calls, each
/// timed from launch to the end of a device synchronisation.
/// </summary>
internal static class IndexAddQuick
{
    /// <summary>Runs the measurement and prints the result.</summary>
    /// <param name="args">[--axis A] [--count C] [--inner I] [--outer O] [--direct | --sorted] [--repeats R] [--warmup W] [--json] [--device D].</param>
    public static int Run(QuickArgs args)
    {
        var device = BenchDevice.Parse(args.Text("device", "ilgpu-cpu"));
        int axis = args.Int("axis", 512), count = args.Int("count", 1024), inner = args.Int("inner", 16), outer = args.Int("outer", 1);
        int repeats = Math.Max(1, args.Int("repeats", 5));
        int warmup = args.Int("warmup", 1);
        bool direct = args.Flag("direct"), sorted = args.Flag("sorted"), json = args.Flag("json");
        args.ThrowIfUnused();
        if (device.Backend is not IlgpuBackend backend)
            throw new ArgumentException("--device: quick indexadd measures the ILGPU backend (cuda, ilgpu-cpu or opencl)");
        if (direct && sorted) throw new ArgumentException("--direct and --sorted exclude each other");
        backend.ForceDirectIndexAdd = direct ? true : sorted ? false : null;
        string path = backend.UsesDirectIndexAdd(outer, axis, count, inner) ? "direct" : "sorted";

        var rng = new Random(42);
        var idx = new long[count];
        for (int j = 0; j < count; j++) idx[j] = rng.Next(axis);
        var src = new float[outer * count * inner];
        for (int i = 0; i < src.Length; i++) src[i] = (float)(rng.NextDouble() * 2 - 1);
        Storage dIdx = backend.Upload(idx), dSrc = backend.Upload(src);
        Storage dst = backend.Allocate(DType.Float32, outer * axis * inner);

        void Once() => backend.IndexAdd(dst, dIdx, dSrc, outer, axis, count, inner);

        var (medianMs, minMs) = BenchDevice.TimeSynced(backend, Once, warmup, repeats);
        string where = BenchDevice.Describe(device);
        Console.WriteLine(json
            ? string.Create(CultureInfo.InvariantCulture, $"{{\"bench\":\"indexadd\",\"impl\":\"puremoe\",\"device\":\"{device}\",\"accelerator\":\"{where}\",\"outer\":{outer},\"axis\":{axis},\"count\":{count},\"inner\":{inner},\"path\":\"{path}\",\"median_ms\":{medianMs:F3},\"min_ms\":{minMs:F3},\"repeats\":{repeats}}}")
            : string.Create(CultureInfo.InvariantCulture, $"indexadd [{outer}, {axis}, {inner}] += [{outer}, {count}, {inner}] on {device} [{where}], {path}: median {medianMs:F3} ms (min {minMs:F3})"));
        return 0;
    }
}
