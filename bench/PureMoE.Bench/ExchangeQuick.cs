using System.Diagnostics;
using System.Globalization;
using PureMoE.Moe;
using PureMoE.Moe.Parallel;
using PureMoE.Moe.Routing;

namespace PureMoE.Bench;

/// <summary>
/// `quick exchange`: one expert-parallel MoE step (TopK k = 2, dropless, float32) over P = 1, 2, 4, 8 logical CPU ranks
/// (or, with --device cuda|ilgpu-cpu, P devices of that kind from it on; P larger than the devices there are is skipped):
/// median forward and backward wall time, the time spent copying between ranks, dispatch bytes per step (= combine
/// bytes; backward moves both again), messages and load imbalance; then the C2R study (TopK contiguous vs C2R
/// co-located bytes, E = 8, P = 4).
/// </summary>
public static class ExchangeQuick
{
    // "logical-cpu:0–3", "cuda:0", "ilgpu-cpu–ilgpu-cpu:3".
    private static string Ranks(DeviceGroup g) => g.Count == 1 ? g.NameOf(0) : $"{g.NameOf(0)}–{g.NameOf(g.Count - 1)}";

    /// <summary>Runs the measurement and prints one line per P.</summary>
    /// <param name="args">[--tokens T per rank] [--hidden d] [--ff F] [--experts E] [--repeats R] [--json] [--no-c2r] [--device D].</param>
    public static int Run(QuickArgs args)
    {
        int tokens = args.Int("tokens", 512), hidden = args.Int("hidden", 256), ff = args.Int("ff", 512);
        int experts = args.Int("experts", 16), repeats = Math.Max(1, args.Int("repeats", 5));
        bool json = args.Flag("json"), noC2r = args.Flag("no-c2r");
        var device = BenchDevice.Parse(args.Text("device", "cpu"));
        args.ThrowIfUnused();

        var source = new MoeLayer(hidden, ff, new TopKRouter(experts, new TopKOptions { K = 2 }), new Rng(1), 0.05);
        foreach (int p in new[] { 1, 2, 4, 8 })
        {
            if (experts % p != 0) continue;
            DeviceGroup group;
            try { group = DeviceGroup.Starting(device, p); }
            catch (InvalidOperationException e)
            {
                Console.Error.WriteLine($"exchange P={p} on {device}: skipped ({e.Message})");
                continue;
            }
            var ep = new ExpertParallelMoeLayer(source, group);
            var inputs = Enumerable.Range(0, p).Select(r => Tensor.Randn(new Shape(tokens, hidden), new Rng((ulong)r + 10)).To(group.DeviceOf(r))).ToArray();
            // Every timed region ends when every rank's device has finished its queued work.
            void SyncAll() { for (int r = 0; r < p; r++) BenchDevice.Sync(group.DeviceOf(r)); }
            var forward = new List<double>();
            var backward = new List<double>();
            var copy = new List<double>();
            ExchangeStats? stats = null;
            for (int i = 0; i < repeats + 1; i++)
            {
                ep.ZeroGrad();
                foreach (var x in inputs) { x.ZeroGrad(); x.RequiresGrad = true; }
                long t0 = Stopwatch.GetTimestamp();
                var ys = ep.Forward(inputs);
                SyncAll();
                double f = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                var loss = ys.Select(y => y.Sum().To(Device.Cpu)).Aggregate((a, b) => a.Add(b));
                long t1 = Stopwatch.GetTimestamp();
                loss.Backward();
                SyncAll();
                double b = Stopwatch.GetElapsedTime(t1).TotalMilliseconds;
                if (i == 0) continue;                                    // warm-up
                forward.Add(f); backward.Add(b); copy.Add(ep.LastStats!.CopyTime.TotalMilliseconds);
                stats = ep.LastStats;
            }
            double Median(List<double> v) { v.Sort(); return v[v.Count / 2]; }
            var s = stats!;
            Console.WriteLine(json
                ? string.Create(CultureInfo.InvariantCulture, $"{{\"bench\":\"exchange\",\"device\":\"{device}\",\"devices\":{p},\"tokens_per_rank\":{tokens},\"hidden\":{hidden},\"ff\":{ff},\"experts\":{experts},\"forward_ms\":{Median(forward):F3},\"backward_ms\":{Median(backward):F3},\"copy_ms\":{Median(copy):F3},\"dispatch_bytes\":{s.DispatchBytes},\"combine_bytes\":{s.CombineBytes},\"backward_bytes\":{s.BackwardBytes},\"metadata_bytes\":{s.MetadataBytes},\"messages\":{s.Messages},\"load_imbalance\":{s.LoadImbalance:F3}}}")
                : string.Create(CultureInfo.InvariantCulture, $"exchange P={p} on {Ranks(group)} ({tokens} tokens/rank, d={hidden}, ff={ff}, E={experts}, top-2): forward {Median(forward):F2} ms, backward {Median(backward):F2} ms, copies {Median(copy):F2} ms; dispatch {s.DispatchBytes / 1024.0:F1} KiB = combine {s.CombineBytes / 1024.0:F1} KiB per step, backward {s.BackwardBytes / 1024.0:F1} KiB, metadata {s.MetadataBytes / 1024.0:F1} KiB, {s.Messages} messages, load max/mean {s.LoadImbalance:F3}"));
        }
        if (!noC2r)
        {
            var r = C2RExchangeStudy.Run();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"c2r study (E=8, P=4, k=2, {r.EvalTokens} eval tokens): TopK contiguous {r.TopKContiguousBytes} B, C2R co-located {r.C2RCoLocatedBytes} B per step each way: {r.Reduction:P1} fewer (placement {r.Placement}; train loss {r.TrainLossFirst:G4} -> {r.TrainLossLast:G4})"));
        }
        return 0;
    }
}
