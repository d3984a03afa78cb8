using System.Diagnostics;
using System.Globalization;
using PureMoE.Autograd;
using PureMoE.Models;
using PureMoE.Moe.Models;

namespace PureMoE.Bench;

/// <summary>
/// `quick decode`: greedy decoding with the KV cache, as `puremoe generate` runs it: a Mixtral-architecture MoE LM with
/// random weights (byte vocabulary 256, Mixtral's router), a prompt of --prompt random bytes, then --tokens steps of
/// one token each (forward, logits of the last position to the host, argmax). The prefill is timed apart; the result
/// is the median over --repeats runs of the decoding steps' mean time per token. Default: the 106M-parameter model of
/// bench/RESULTS.md (d 512, 8 layers, 8 heads / 2 kv, 8 experts of 1024, top-2). The peer is bench/peers/decode_torch.py.
/// </summary>
internal static class DecodeQuick
{
    /// <summary>Runs the measurement and prints the result.</summary>
    /// <param name="args">[--hidden D] [--ff F] [--layers L] [--heads H] [--kv-heads K] [--experts E] [--k K] [--prompt P] [--tokens N] [--repeats R] [--json] [--device D].</param>
    public static int Run(QuickArgs args)
    {
        var device = BenchDevice.Parse(args.Text("device", "cpu"));
        int hidden = args.Int("hidden", 512), ff = args.Int("ff", 1024), layers = args.Int("layers", 8);
        int heads = args.Int("heads", 8), kvHeads = args.Int("kv-heads", 2), experts = args.Int("experts", 8), k = args.Int("k", 2);
        int prompt = Math.Max(1, args.Int("prompt", 16)), tokens = Math.Max(1, args.Int("tokens", 64));
        int repeats = Math.Max(1, args.Int("repeats", 5));
        bool json = args.Flag("json");
        args.ThrowIfUnused();

        var config = new MixtralConfig
        {
            VocabSize = 256, HiddenSize = hidden, IntermediateSize = ff, NumHiddenLayers = layers,
            NumAttentionHeads = heads, NumKeyValueHeads = kvHeads, NumLocalExperts = experts, NumExpertsPerTok = k,
            MaxPositionEmbeddings = prompt + tokens,
        };
        var model = MoeMixtral.Create(config, new Rng(1), device: device);
        model.Eval();
        long parameters = model.Parameters().Sum(p => (long)p.Numel);
        var rng = new Rng(2);
        long[] promptIds = Enumerable.Range(0, prompt).Select(_ => (long)rng.NextInt(256)).ToArray();

        // One run: prefill, then `tokens` greedy steps; returns (prefill ms, mean ms per decoded token).
        (double Prefill, double PerToken) Once()
        {
            using var _ = GradMode.NoGrad();
            var cache = model.NewCache();
            var clock = Stopwatch.StartNew();
            long next = ArgMaxLast(model.Forward(Tensor.FromHost(promptIds, [1, prompt], device), cache));
            double prefill = clock.Elapsed.TotalMilliseconds;
            clock.Restart();
            for (int t = 0; t < tokens; t++)
                next = ArgMaxLast(model.Forward(Tensor.FromHost(new[] { next }, [1, 1], device), cache));
            return (prefill, clock.Elapsed.TotalMilliseconds / tokens);
        }

        Once(); // warm-up: JIT, and the kernels' first compilation on an ILGPU device
        long launchesBefore = device.Launches, readsBefore = device.HostReads;
        var byKernelBefore = device.LaunchesByKernel;
        var runs = Enumerable.Range(0, repeats).Select(_ => Once()).ToArray();
        double perToken = BenchDevice.Median(runs.Select(r => r.PerToken)), prefillMs = BenchDevice.Median(runs.Select(r => r.Prefill));
        // On an ILGPU device, what one token costs the host (the prefill's share is small at --tokens 64): kernel
        // launches (a few µs each on a GPU) and reads that wait for the device, and where the launches go.
        double steps = (double)repeats * (tokens + 1);
        double launchesPerToken = (device.Launches - launchesBefore) / steps, readsPerToken = (device.HostReads - readsBefore) / steps;
        string topKernels = string.Join(", ", device.LaunchesByKernel
            .Select(kv => (Name: kv.Key, PerToken: (kv.Value - byKernelBefore.GetValueOrDefault(kv.Key)) / steps))
            .Where(e => e.PerToken > 0).OrderByDescending(e => e.PerToken).ThenBy(e => e.Name, StringComparer.Ordinal)
            .Take(8).Select(e => string.Create(CultureInfo.InvariantCulture, $"{e.Name} {e.PerToken:F1}")));
        string where = BenchDevice.Describe(device);
        string perTokenCosts = launchesPerToken > 0
            ? string.Create(CultureInfo.InvariantCulture, $"; per token {launchesPerToken:F1} launches ({topKernels}), {readsPerToken:F1} host reads")
            : "";
        Console.WriteLine(json
            ? string.Create(CultureInfo.InvariantCulture, $"{{\"bench\":\"decode\",\"impl\":\"puremoe\",\"device\":\"{device}\",\"accelerator\":\"{where}\",\"parameters\":{parameters},\"hidden\":{hidden},\"ff\":{ff},\"layers\":{layers},\"experts\":{experts},\"k\":{k},\"prompt\":{prompt},\"tokens\":{tokens},\"prefill_ms\":{prefillMs:F2},\"ms_per_token\":{perToken:F3},\"tokens_per_s\":{1000 / perToken:F1},\"launches_per_token\":{launchesPerToken:F1},\"host_reads_per_token\":{readsPerToken:F1},\"top_kernels\":\"{topKernels}\",\"repeats\":{repeats}}}")
            : string.Create(CultureInfo.InvariantCulture, $"decode {parameters:N0} parameters (d {hidden}, {layers} layers, {experts} experts top-{k}) on {device} [{where}]: prompt {prompt} in {prefillMs:F1} ms, then {perToken:F2} ms/token ({1000 / perToken:F1} tokens/s), median of {repeats} runs of {tokens} tokens{perTokenCosts}"));
        return 0;
    }

    // The most likely next token after the last position of logits [1, S, V], as `puremoe generate` picks it greedily.
    private static long ArgMaxLast(Tensor logits) => Sampling.ArgMax(logits.Narrow(1, logits.Size(1) - 1, 1).ToDoubleArray());
}
