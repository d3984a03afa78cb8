using System.Globalization;
using PureMoE.Backends;
using PureMoE.Backends.Ilgpu;

namespace PureMoE.Bench;

/// <summary>
/// `quick gemm --device cuda|ilgpu-cpu|opencl`: the ILGPU backend's Gemm primitive (float32, row-major, beta = 0) on
/// device buffers, with the protocol of bench/peers/gemm_torch.py: at least `warmup` untimed calls and one second
/// of warm-up (kernel compilation happens there), then the median of `repeats` calls, each timed from launch to the
/// end of a device synchronisation. Inputs are uniform in [-1, 1); the output is poisoned with NaN before the first
/// call, and `checks` sampled elements are compared with a float64 dot product on the host (max relative error).
/// </summary>
internal static class GemmDeviceQuick
{
    /// <summary>Sets which SGEMM kernel the backend uses from a --kernel value: auto, tiled, medium or large.</summary>
    internal static void ChooseKernel(IlgpuBackend backend, string kernelName) => backend.GemmKernel = kernelName switch
    {
        "auto" => GemmKernelChoice.Auto,
        "tiled" => GemmKernelChoice.Tiled,
        "medium" => GemmKernelChoice.Medium,
        "large" => GemmKernelChoice.Large,
        _ => throw new ArgumentException($"--kernel {kernelName}: expected auto, tiled, medium or large"),
    };

    /// <summary>Runs the measurement and prints the result.</summary>
    /// <param name="args">--n N [--m M] [--k K] [--ta] [--tb] [--repeats R] [--warmup W] [--json] [--kernel auto|tiled|medium|large] [--split-k auto|S] (K in S slices; 1: never) [--checks C].</param>
    /// <param name="device">An ILGPU device.</param>
    public static int Run(QuickArgs args, Device device)
    {
        int n = args.Int("n");
        int m = args.Int("m", n);
        int k = args.Int("k", n);
        int repeats = Math.Max(1, args.Int("repeats", 10));
        int warmup = args.Int("warmup", 3);
        int checks = args.Int("checks", 64);
        bool json = args.Flag("json");
        bool transA = args.Flag("ta"), transB = args.Flag("tb");
        string kernelName = args.Text("kernel", "auto");
        string splitName = args.Text("split-k", "auto");
        args.ThrowIfUnused();

        var backend = (IlgpuBackend)device.Backend;
        ChooseKernel(backend, kernelName);
        backend.ForcedSplitK = splitName == "auto" ? null
            : int.TryParse(splitName, out int s) && s >= 1 ? s
            : throw new ArgumentException($"--split-k {splitName}: expected auto or a number of slices ≥ 1 (1: never split)");
        int slices = backend.SplitKSlices(m, n, k, 1);
        string kernel = slices > 1
            ? $"Sgemm64 split-K ({slices} slices of K, then splitKSum)"
            : backend.GemmKernelFor(m, n, 1) switch
            {
                GemmKernelChoice.Large => "Sgemm128 (128x128 tile, 8x8 per thread, 256 threads)",
                GemmKernelChoice.Medium => "Sgemm64 (64x64 tile, 4x4 per thread, 256 threads)",
                _ => $"Sgemm tiled ({4 * backend.GemmThreads.TY}x{4 * backend.GemmThreads.TX} tile, 4x4 per thread, {backend.GroupSize} threads)",
            };

        var rng = new Random(42);
        float[] a = RandomMatrix(rng, m * k);
        float[] b = RandomMatrix(rng, k * n);
        int lda = transA ? m : k, ldb = transB ? k : n;
        Storage da = backend.Upload(a), db = backend.Upload(b);
        Storage dc = backend.Allocate(DType.Float32, m * n);
        backend.Fill(dc, 0, m * n, float.NaN);

        void Once() => backend.Gemm(transA, transB, m, n, k, 1, da, 0, lda, 0, db, 0, ldb, 0, 0, dc, 0, n, 0, 1);

        var (medianMs, minMs) = BenchDevice.TimeSynced(backend, Once, warmup, repeats, warmupSeconds: 1);
        double maxRel = Check(backend, dc, a, b, m, n, k, transA, transB, checks, rng);
        double gflops = 2.0 * m * n * k / (medianMs * 1e6);
        string where = BenchDevice.Describe(device);

        string line = json
            ? string.Create(CultureInfo.InvariantCulture, $"{{\"bench\":\"gemm\",\"impl\":\"puremoe\",\"device\":\"{device}\",\"accelerator\":\"{where}\",\"n\":{n},\"m\":{m},\"k\":{k},\"transA\":{(transA ? "true" : "false")},\"transB\":{(transB ? "true" : "false")},\"gflops\":{gflops:F2},\"median_ms\":{medianMs:F3},\"min_ms\":{minMs:F3},\"repeats\":{repeats},\"kernel\":\"{kernel}\",\"max_rel_err\":{(double.IsNaN(maxRel) ? "null" : maxRel.ToString("E2", CultureInfo.InvariantCulture))},\"checked\":{checks}}}")
            : string.Create(CultureInfo.InvariantCulture, $"gemm{(transA ? " Aᵀ" : "")}{(transB ? " Bᵀ" : "")} {m}x{k} * {k}x{n} on {device} [{where}]: median {medianMs:F3} ms (min {minMs:F3}), {gflops:F1} GFLOP/s, kernel {kernel}, max rel err {maxRel:E2} over {checks} sampled elements");
        Console.WriteLine(line);
        backend.ForcedSplitK = null;
        return maxRel <= 1e-3 ? 0 : 1;
    }

    /// <summary>Max |c − ref| / (Σ|a·b|) over sampled elements (NaN when an element was not written).</summary>
    private static double Check(IlgpuBackend backend, Storage dc, float[] a, float[] b, int m, int n, int k, bool transA, bool transB, int count, Random rng)
    {
        var c = new float[m * n];
        backend.Download(dc, 0, c, c.Length);
        double worst = 0;
        for (int s = 0; s < count; s++)
        {
            // Corners first (ragged tiles), then random elements.
            int i = s switch { 0 => 0, 1 => m - 1, 2 => 0, 3 => m - 1, _ => rng.Next(m) };
            int j = s switch { 0 => 0, 1 => n - 1, 2 => n - 1, 3 => 0, _ => rng.Next(n) };
            double dot = 0, mag = 0;
            for (int p = 0; p < k; p++)
            {
                double x = transA ? a[p * m + i] : a[i * k + p];
                double y = transB ? b[j * k + p] : b[p * n + j];
                dot += x * y;
                mag += Math.Abs(x * y);
            }

            double err = Math.Abs(c[i * n + j] - dot) / Math.Max(mag, 1e-30);
            if (double.IsNaN(err))
            {
                return double.NaN;
            }

            worst = Math.Max(worst, err);
        }

        return worst;
    }

    private static float[] RandomMatrix(Random rng, int length)
    {
        var x = new float[length];
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)(rng.NextDouble() * 2 - 1);
        }

        return x;
    }
}
