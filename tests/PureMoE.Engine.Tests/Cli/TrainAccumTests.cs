using PureMoE.Cli;
using PureMoE.Moe.Models;
using PureMoE.Moe.Routing;

namespace PureMoE.Engine.Tests.Cli;

/// <summary>Gradient accumulation (`puremoe train --accum N`): N micro-batches of B train like one batch of N·B.</summary>
public sealed class TrainAccumTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("puremoe-accum").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static TrainOptions Tiny(string router) => new()
    {
        Steps = 6, Batch = 4, Seq = 16, Hidden = 32, FeedForward = 48, Layers = 2, Experts = 4, TopK = 1, Warmup = 2, EvalEvery = 3,
        EvalBatches = 2,
        Router = router switch
        {
            "relu" => RouterSpec.Create("relu", new Dictionary<string, string> { ["k"] = "1" }),
            "topk-aux" => RouterSpec.Create("topk", new Dictionary<string, string> { ["k"] = "1", ["aux_loss"] = "0.01", ["z_loss"] = "0.001" }),
            _ => RouterSpec.Create("topk", new Dictionary<string, string> { ["k"] = "1", ["aux_loss"] = "0" }),
        },
    };

    private static TrainCommand.TrainResult Run(TrainOptions o) => TrainCommand.Run(o, TextWriter.Null, TestContext.Current.CancellationToken);

    private static void AssertClose(IEnumerable<double> expected, IEnumerable<double> actual, double relative)
    {
        var (e, a) = (expected.ToArray(), actual.ToArray());
        Assert.Equal(e.Length, a.Length);
        for (int i = 0; i < e.Length; i++)
            Assert.True(Math.Abs(e[i] - a[i]) <= relative * Math.Abs(e[i]), $"[{i}]: {a[i]:R}, one batch {e[i]:R}");
    }

    [Theory]
    [InlineData("topk", 2, 1e-5)]
    [InlineData("topk", 4, 1e-5)]
    [InlineData("relu", 2, 1e-5)]
    [InlineData("topk-aux", 2, 1e-3)]
    public void MicroBatchesTrainLikeOneBatchOfAllTheirSequences(string router, int accum, double tolerance)
    {
        var whole = Run(Tiny(router));
        var split = Run(Tiny(router) with { Batch = 4 / accum, Accum = accum });

        // The same sequences and the same mean loss. The gradients differ in the order of float additions, and with
        // the aux and z losses also because those regularisers see one micro-batch at a time (hence the looser bound).
        AssertClose(whole.TrainLosses, split.TrainLosses, tolerance);
        AssertClose(whole.ValidLosses.Select(v => v.Loss), split.ValidLosses.Select(v => v.Loss), tolerance);
        Assert.Equal(whole.ValidLosses.Select(v => v.Step), split.ValidLosses.Select(v => v.Step));
        Assert.Equal(whole.TrainLosses[0], split.TrainLosses[0], 1e-6);

        // Step 1 routes every token from the same weights (these routers decide per token): the merged statistics
        // count the whole batch, expert by expert.
        for (int layer = 0; layer < 2; layer++)
        {
            var (w, s) = (whole.History[0].Stats[layer]!, split.History[0].Stats[layer]!);
            Assert.Equal(4 * 17, s.Tokens);   // the model runs the seq + 1 tokens of each sequence
            Assert.Equal(w.Tokens, s.Tokens);
            Assert.Equal(w.ExpertLoad, s.ExpertLoad);
            Assert.Equal(w.PairsChosen, s.PairsChosen);
            Assert.Equal(w.ActiveExpertsPerToken, s.ActiveExpertsPerToken, 12);
            // The aux loss is averaged over the micro-batches, as the objective averages it (summed would be 2×).
            if (router == "topk-aux") AssertClose([w.AuxLoss], [s.AuxLoss], 0.2);
        }
        if (router == "relu")
        {
            // λ moved on the sparsity of the whole step's tokens, as it does without accumulation.
            double Lambda(TrainCommand.TrainResult r, int step) => r.History[step].Stats[0]!.Extras["lambda"];
            Assert.Equal(Lambda(whole, 1), Lambda(split, 1));
            Assert.NotEqual(Lambda(whole, 0), Lambda(whole, 1));
        }
    }

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void AccumulatedGradientsAreThoseOfTheWholeBatch(int accum)
    {
        // AdamW is blind to the gradients' scale, so the losses above cannot tell a missing 1/N: compare the gradients.
        string dir = Path.Combine(_dir, "model");
        Run(Tiny("topk") with { Steps = 1, OutDir = dir });
        var rng = new Rng(5);
        var batch = Tensor.FromArray(Enumerable.Range(0, 4 * 17).Select(_ => (long)rng.NextInt(256)).ToArray(), 4, 17);

        float[][] Gradients(int count)
        {
            var model = MoeMixtral.Load(dir);
            using var step = DeviceScope.Begin(reuseHostMemory: true);
            var earlier = MicroBatches.RunAllButLast(model, batch, count, Device.Cpu);
            MicroBatches.ForwardBackward(model, MicroBatches.Micro(batch, count - 1, count), count, Device.Cpu);
            Assert.Equal(count - 1, earlier.Stats.Count);
            Assert.All(earlier.Plans, plans => Assert.Equal(count - 1, plans.Count));
            return model.Parameters().Select(p => p.Grad!.ToFloatArray()).ToArray();
        }
        var (whole, split) = (Gradients(1), Gradients(accum));
        Assert.Equal(whole.Length, split.Length);
        for (int i = 0; i < whole.Length; i++)
        {
            double norm = Math.Sqrt(whole[i].Sum(x => (double)x * x)), diff = Math.Sqrt(whole[i].Zip(split[i], (a, b) => (double)(a - b) * (a - b)).Sum());
            Assert.True(diff <= 1e-5 * norm + 1e-9, $"parameter {i}: |Δg| {diff:E2}, |g| {norm:E2}");
        }
    }

    [Fact]
    public void AnAccumulatedRunResumesExactlyAndKeepsItsAccumulation()
    {
        var o = Tiny("topk") with { Batch = 2, Accum = 2 };
        var full = Run(o);
        string ckpt = Path.Combine(_dir, "ckpt");
        Run(o with { CheckpointDir = ckpt, SaveEvery = 3, Keep = 0 });
        var resumed = Run(o with { ResumeDir = TrainCheckpoint.StepDir(ckpt, 3) });
        Assert.Equal(full.TrainLosses.Select(BitConverter.DoubleToInt64Bits), resumed.TrainLosses.Select(BitConverter.DoubleToInt64Bits));

        var e = Assert.Throws<CliException>(() => Run(o with { Accum = 1, ResumeDir = TrainCheckpoint.StepDir(ckpt, 3) }));
        Assert.Contains("option accum", e.Message);
        Assert.Contains("--accum 0", Assert.Throws<CliException>(() => Run(o with { Accum = 0 })).Message);

        // One micro-batch is the plain run: its saved options have no accum (checkpoints from before --accum resume).
        Assert.False(Tiny("topk").ToValues().ContainsKey("accum"));
        Assert.Equal("2", o.ToValues()["accum"]);
        Assert.Equal(3, TrainOptions.FromValues(new Dictionary<string, string> { ["accum"] = "3" }, "test").Accum);
    }
}
