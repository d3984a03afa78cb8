using System.Globalization;
using PureMoE.Backends.Cpu;

namespace PureMoE.Bench;

/// <summary>
/// `quick gemm`: C = op(A)·op(B) (float32, row-major, beta = 0; --ta/--tb transpose the stored operands) timed with the protocol shared with
/// bench/peers/gemm_numpy.py: at least `warmup` untimed calls and one second of warm-up, then the median of `repeats` timed calls.
/// </summary>
public static class GemmQuick
{
    /// <summary>Runs the measurement and prints the result.</summary>
    /// <param name="args">--n N [--m M] [--k K] [--ta] [--tb] [--repeats R] [--warmup W] [--json] [--device D]; tuning: [--kc] [--mc] [--nc].</param>
    public static int Run(QuickArgs args)
    {
        var device = BenchDevice.Parse(args.Text("device", "cpu"));
        if (!device.IsHost)
        {
            return GemmDeviceQuick.Run(args, device);
        }

        int n = args.Int("n");
        int m = args.Int("m", n);
        int k = args.Int("k", n);
        int repeats = Math.Max(1, args.Int("repeats", 10));
        int warmup = args.Int("warmup", 3);
        bool json = args.Flag("json");
        bool transA = args.Flag("ta"), transB = args.Flag("tb");
        // Blocking-size overrides, only for tuning sweeps.
        Sgemm.Kc = args.Int("kc", Sgemm.Kc);
        Sgemm.Mc = args.Int("mc", Sgemm.Mc);
        Sgemm.Nc = args.Int("nc", Sgemm.Nc);
        args.ThrowIfUnused();

        var rng = new Random(42);
        float[] a = RandomMatrix(rng, m * k);
        float[] b = RandomMatrix(rng, k * n);
        float[] c = new float[m * n];

        int lda = transA ? m : k, ldb = transB ? k : n;
        void Once() => Sgemm.Multiply(transA, transB, m, n, k, 1f, a, 0, lda, b, 0, ldb, 0f, c, 0, n);

        // Warm-up: at least `warmup` calls and at least one second (JIT tiering, caches, thread pool).
        var (medianMs, minMs) = BenchDevice.Time(device, Once, warmup, repeats, warmupSeconds: 1);
        double gflops = 2.0 * m * n * k / (medianMs * 1e6);
        int threads = Environment.ProcessorCount;

        string line = json
            ? string.Create(CultureInfo.InvariantCulture, $"{{\"bench\":\"gemm\",\"impl\":\"puremoe\",\"n\":{n},\"m\":{m},\"k\":{k},\"transA\":{(transA ? "true" : "false")},\"transB\":{(transB ? "true" : "false")},\"gflops\":{gflops:F1},\"median_ms\":{medianMs:F3},\"min_ms\":{minMs:F3},\"repeats\":{repeats},\"threads\":{threads},\"kernel\":\"{Sgemm.Kind}\",\"device\":\"cpu\"}}")
            : string.Create(CultureInfo.InvariantCulture, $"gemm{(transA ? " Aᵀ" : "")}{(transB ? " Bᵀ" : "")} {m}x{k} * {k}x{n}: median {medianMs:F3} ms (min {minMs:F3}), {gflops:F1} GFLOP/s, {threads} threads, kernel {Sgemm.Kind} {Sgemm.Mr}x{Sgemm.Nr}, KC={Sgemm.Kc} MC={Sgemm.Mc} NC={Sgemm.Nc}");
        Console.WriteLine(line);
        return 0;
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
