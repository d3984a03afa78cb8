using System.Globalization;

namespace PureMoE.Bench;

/// <summary>
/// `quick attention`: forward + backward of <see cref="Tensor.CausalAttention(Tensor, Tensor, Tensor)"/> on q
/// [B, H, S, D] and k, v [B, Hkv, S, D] (default: the compare model's attention at context 512), with the query
/// rows of its block-causal products taken --block at a time (0: the engine's rule), or (--kernel tiles) tile by tile
/// without the score matrices (--kernel auto: the engine's choice, tiles from 512 queries on the CPU). GFLOP/s count
/// the causal half of the plain products (2·B·H·S²·D per product, 6 products, 2 with --forward: no backward), whatever the kernels compute; "step
/// memory" is the host memory a step's tensors took (<see cref="DeviceScope.LastScopeHostBytes"/>). Protocol as
/// `quick gemm`: `warmup` untimed steps, then the median of `repeats` steps, each ended by a device synchronisation.
/// </summary>
internal static class AttentionQuick
{
    /// <summary>Runs the measurement and prints the result.</summary>
    /// <param name="args">[--batch B] [--heads H] [--kv-heads Hkv] [--seq S] [--dim D] [--block N] [--kernel auto|products|tiles] [--forward] [--repeats R] [--warmup W] [--json] [--device D].</param>
    public static int Run(QuickArgs args)
    {
        var device = BenchDevice.Parse(args.Text("device", "cpu"));
        int b = args.Int("batch", 4), h = args.Int("heads", 4), hkv = args.Int("kv-heads", 2);
        int s = args.Int("seq", 512), d = args.Int("dim", 32), block = args.Int("block", 0);
        int repeats = Math.Max(1, args.Int("repeats", 7)), warmup = args.Int("warmup", 2);
        string kernel = args.Text("kernel", "auto");
        bool? tiled = kernel switch
        {
            "auto" => null,
            "products" => false,
            "tiles" => true,
            _ => throw new ArgumentException($"--kernel {kernel}: choose auto, products or tiles"),
        };
        bool forwardOnly = args.Flag("forward");
        bool json = args.Flag("json");
        args.ThrowIfUnused();
        int rows = block > 0 ? block : Tensor.AttentionBlockRows(s);

        var rng = new Rng(1);
        Tensor Leaf(params int[] shape)
        {
            var t = Tensor.Randn(new Shape(shape), rng, device: device);
            t.RequiresGrad = true;
            return t;
        }
        var (q, k, v) = (Leaf(b, h, s, d), Leaf(b, hkv, s, d), Leaf(b, hkv, s, d));
        var dy = Tensor.Randn(new Shape(b, h, s, d), rng, device: device);
        void Step()
        {
            using var scope = DeviceScope.Begin(reuseHostMemory: true);
            q.ZeroGrad(); k.ZeroGrad(); v.ZeroGrad();
            if (forwardOnly)
                using (Autograd.GradMode.NoGrad()) Tensor.CausalAttention(q, k, v, rows, tiled);
            else
                Tensor.CausalAttention(q, k, v, rows, tiled).Backward(dy);
            BenchDevice.Sync(device); // inside the scope: its buffers go back to the pool only after the work is done
        }

        var (median, minMs) = BenchDevice.Time(device, Step, warmup, repeats);
        double gflops = (forwardOnly ? 2.0 : 6.0) * b * h * s * (s + 1) / 2.0 * d * 2 / (median * 1e6);
        string where = BenchDevice.Describe(device);
        double stepMiB = DeviceScope.LastScopeHostBytes / 1048576.0;
        Console.WriteLine(json
            ? string.Create(CultureInfo.InvariantCulture, $"{{\"bench\":\"attention\",\"impl\":\"puremoe\",\"device\":\"{device}\",\"accelerator\":\"{where}\",\"batch\":{b},\"heads\":{h},\"kv_heads\":{hkv},\"seq\":{s},\"dim\":{d},\"block\":{rows},\"kernel\":\"{kernel}\",\"forward_only\":{(forwardOnly ? "true" : "false")},\"step_mib\":{stepMiB:F1},\"median_ms\":{median:F3},\"min_ms\":{minMs:F3},\"gflops\":{gflops:F1},\"repeats\":{repeats}}}")
            : string.Create(CultureInfo.InvariantCulture, $"attention {(forwardOnly ? "fwd" : "fwd+bwd")} q [{b},{h},{s},{d}] kv heads {hkv} on {device} [{where}], {kernel}, blocks of {rows}: median {median:F2} ms (min {minMs:F2}), {gflops:F1} GFLOP/s (causal half), step memory {stepMiB:F1} MiB"));
        return 0;
    }
}
