using System.Globalization;
using PureMoE.Backends;
using PureMoE.Backends.Ilgpu;

namespace PureMoE.Bench;

/// <summary>
/// `quick argsort --device cuda|ilgpu-cpu|opencl`: the ILGPU backend's ArgSort (float32 x [rows, n], ascending,
/// random values). By default the backend picks its path (rank counting for short rows or small jobs, else a radix
/// sort); --ranks forces rank counting (O(n²) per row, one launch), --radix the radix sort, to compare them.
/// Protocol as `quick gemm`: `warmup` untimed calls (compilation happens there), then the median of `repeats`
/// calls, each timed from launch to the end of a device synchronisation.
/// </summary>
internal static class ArgSortQuick
{
    /// <summary>Runs the measurement and prints the result.</summary>
    /// <param name="args">[--rows R] [--n N] [--ranks | --radix] [--repeats R] [--warmup W] [--json] [--device D].</param>
    public static int Run(QuickArgs args)
    {
        var device = BenchDevice.Parse(args.Text("device", "ilgpu-cpu"));
        int rows = Math.Max(1, args.Int("rows", 1)), n = Math.Max(1, args.Int("n", 4096));
        int repeats = Math.Max(1, args.Int("repeats", 5));
        int warmup = args.Int("warmup", 1);
        bool ranks = args.Flag("ranks"), radix = args.Flag("radix"), json = args.Flag("json");
        args.ThrowIfUnused();
        if (device.Backend is not IlgpuBackend backend)
            throw new ArgumentException("--device: quick argsort measures the ILGPU backend (cuda, ilgpu-cpu or opencl)");
        if (ranks && radix) throw new ArgumentException("--ranks and --radix exclude each other");
        backend.ForceRankArgSort = ranks ? true : radix ? false : null;
        string path = backend.UsesRankArgSort(rows, n) ? "ranks" : "radix";

        var rng = new Random(42);
        var x = new float[rows * n];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        Storage dx = backend.Upload(x);
        Storage indices = backend.Allocate(DType.Int64, rows * n);

        void Once() => backend.ArgSort(dx, indices, rows, n, descending: false);

        var (medianMs, minMs) = BenchDevice.TimeSynced(backend, Once, warmup, repeats);
        string where = BenchDevice.Describe(device);
        Console.WriteLine(json
            ? string.Create(CultureInfo.InvariantCulture, $"{{\"bench\":\"argsort\",\"impl\":\"puremoe\",\"device\":\"{device}\",\"accelerator\":\"{where}\",\"rows\":{rows},\"n\":{n},\"path\":\"{path}\",\"median_ms\":{medianMs:F3},\"min_ms\":{minMs:F3},\"repeats\":{repeats}}}")
            : string.Create(CultureInfo.InvariantCulture, $"argsort [{rows}, {n}] on {device} [{where}], {path}: median {medianMs:F3} ms (min {minMs:F3})"));
        return 0;
    }
}
