using PureMoE.Cli;
using PureMoE.Moe.Models;

namespace PureMoE.Engine.Tests.Cli;

/// <summary>Checkpoints: exact resume, cancellation, damaged or missing checkpoints, config files.</summary>
public sealed class TrainResumeTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("puremoe-resume").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static TrainOptions Tiny(string router = "topk") => new()
    {
        Steps = 8, Batch = 4, Seq = 16, Hidden = 32, FeedForward = 48, Layers = 2, Experts = 4, TopK = 1, Warmup = 3, EvalEvery = 4,
        EvalBatches = 1,
        Router = router switch
        {
            "relu" => RouterSpec.Create("relu", new Dictionary<string, string> { ["k"] = "1" }),
            "rectify" => RouterSpec.Create("rectify", new Dictionary<string, string> { ["k"] = "1", ["capacity_factor"] = "1.0" }),
            _ => RouterSpec.Create("topk", new Dictionary<string, string> { ["k"] = "1", ["aux_loss"] = "0.01" }),
        },
    };

    private static long[] Bits(IEnumerable<double> xs) => xs.Select(BitConverter.DoubleToInt64Bits).ToArray();

    [Theory]
    [InlineData("topk")]
    [InlineData("relu")]
    [InlineData("rectify")]
    public void ResumeReproducesTheUninterruptedLossesToTheLastBit(string router)
    {
        var ct = TestContext.Current.CancellationToken;
        var full = TrainCommand.Run(Tiny(router), TextWriter.Null, ct);
        string ckpt = Path.Combine(_dir, router);
        TrainCommand.Run(Tiny(router) with { CheckpointDir = ckpt, SaveEvery = 3, Keep = 0 }, TextWriter.Null, ct);
        var resumed = TrainCommand.Run(Tiny(router) with { ResumeDir = TrainCheckpoint.StepDir(ckpt, 3) }, TextWriter.Null, ct);
        Assert.Equal(Bits(full.TrainLosses), Bits(resumed.TrainLosses));
        Assert.Equal(Bits(full.ValidLosses.Select(v => v.Loss)), Bits(resumed.ValidLosses.Select(v => v.Loss)));
        Assert.Equal(8 - 3, resumed.History.Count);
    }

    [Fact]
    public void CancellationSavesALoadableCheckpointThatResumesExactly()
    {
        var full = TrainCommand.Run(Tiny("relu"), TextWriter.Null, TestContext.Current.CancellationToken);
        using var cts = new CancellationTokenSource();
        string ckpt = Path.Combine(_dir, "cancel");
        var log = new StringWriter();
        var stopped = TrainCommand.Run(Tiny("relu") with { CheckpointDir = ckpt }, log, cts.Token, r => { if (r.Step == 5) cts.Cancel(); });
        Assert.True(stopped.Cancelled);
        Assert.Equal(5, stopped.TrainLosses.Count);
        Assert.Equal(TrainCheckpoint.StepDir(ckpt, 5), stopped.CheckpointPath);
        Assert.Contains("cancelled after step 5", log.ToString());
        // Loadable as a model and as a checkpoint; the parent resolves to the newest step.
        Assert.NotNull(MoeMixtral.Load(stopped.CheckpointPath!));
        var resumed = TrainCommand.Run(Tiny("relu") with { ResumeDir = ckpt }, TextWriter.Null, TestContext.Current.CancellationToken);
        Assert.Equal(Bits(full.TrainLosses), Bits(resumed.TrainLosses));
    }

    [Fact]
    public void DamagedOrMissingCheckpointsAreClearErrorsAndLeaveTheOthersIntact()
    {
        var ct = TestContext.Current.CancellationToken;
        string ckpt = Path.Combine(_dir, "damaged");
        TrainCommand.Run(Tiny() with { Steps = 4, CheckpointDir = ckpt, SaveEvery = 2, Keep = 0 }, TextWriter.Null, ct);
        string good = TrainCheckpoint.StepDir(ckpt, 2), bad = TrainCheckpoint.StepDir(ckpt, 4);
        var before = Directory.GetFiles(good).ToDictionary(f => f, File.ReadAllBytes);

        // Truncated weights in the newest checkpoint.
        string weights = Path.Combine(bad, "model.safetensors");
        File.WriteAllBytes(weights, File.ReadAllBytes(weights)[..100]);
        var e1 = Assert.Throws<CliException>(() => TrainCommand.Run(Tiny() with { Steps = 4, ResumeDir = ckpt }, TextWriter.Null, ct));
        Assert.Contains(bad, e1.Message);
        Assert.Contains("weights", e1.Message);
        // Options are checked from the trainer state before any weights are read.
        var e0 = Assert.Throws<CliException>(() => TrainCommand.Run(Tiny() with { Steps = 4, Hidden = 64, ResumeDir = ckpt }, TextWriter.Null, ct));
        Assert.Contains("option hidden", e0.Message);

        // Missing optimizer state, damaged trainer state, missing directory, wrong options.
        CopyDir(good, Path.Combine(_dir, "noopt"));
        File.Delete(Path.Combine(_dir, "noopt", TrainCheckpoint.OptimizerFile));
        var e2 = Assert.Throws<CliException>(() => TrainCommand.Run(Tiny() with { Steps = 4, ResumeDir = Path.Combine(_dir, "noopt") }, TextWriter.Null, ct));
        Assert.Contains("optimizer", e2.Message);
        // Optimizer state of another shape (its moments one element short) does not fit, and says which tensor.
        CopyDir(good, Path.Combine(_dir, "badopt"));
        string opt = Path.Combine(_dir, "badopt", TrainCheckpoint.OptimizerFile);
        var moments = PureMoE.IO.TensorIO.Load(opt);
        string first = moments.Keys.First(k => k.EndsWith(".exp_avg", StringComparison.Ordinal));
        moments[first] = moments[first].Reshape(-1).Narrow(0, 0, moments[first].Numel - 1).Contiguous();
        PureMoE.IO.TensorIO.Save(opt, moments);
        var e2b = Assert.Throws<CliException>(() => TrainCommand.Run(Tiny() with { Steps = 4, ResumeDir = Path.Combine(_dir, "badopt") }, TextWriter.Null, ct));
        Assert.Contains("does not fit the model", e2b.Message);
        Assert.Contains(first, e2b.Message);
        CopyDir(good, Path.Combine(_dir, "badstate"));
        File.WriteAllText(Path.Combine(_dir, "badstate", TrainCheckpoint.StateFile), "{\"step\": 2, \"train_");
        var e3 = Assert.Throws<CliException>(() => TrainCommand.Run(Tiny() with { Steps = 4, ResumeDir = Path.Combine(_dir, "badstate") }, TextWriter.Null, ct));
        Assert.Contains("damaged", e3.Message);
        var e4 = Assert.Throws<CliException>(() => TrainCommand.Run(Tiny() with { ResumeDir = Path.Combine(_dir, "nowhere") }, TextWriter.Null, ct));
        Assert.Contains("no such checkpoint", e4.Message);
        var e5 = Assert.Throws<CliException>(() => TrainCommand.Run(Tiny() with { Steps = 4, Hidden = 64, ResumeDir = good }, TextWriter.Null, ct));
        Assert.Contains("option hidden", e5.Message);

        // The good checkpoint is untouched and still resumes.
        Assert.Equal(before.Keys.Order(), Directory.GetFiles(good).Order());
        foreach (var (f, bytes) in before) Assert.Equal(bytes, File.ReadAllBytes(f));
        var resumed = TrainCommand.Run(Tiny() with { Steps = 4, ResumeDir = good }, TextWriter.Null, ct);
        Assert.Equal(4, resumed.TrainLosses.Count);
    }

    [Fact]
    public void SavingOverACheckpointReplacesItWhole()
    {
        var ct = TestContext.Current.CancellationToken;
        string dir = Path.Combine(_dir, "out");
        TrainCommand.Run(Tiny() with { Steps = 2, OutDir = dir }, TextWriter.Null, ct);
        TrainCommand.Run(Tiny() with { Steps = 3, OutDir = dir }, TextWriter.Null, ct);
        Assert.Contains("\"step\": 3", File.ReadAllText(Path.Combine(dir, TrainCheckpoint.StateFile)));
        Assert.DoesNotContain(Directory.GetDirectories(_dir), d => Path.GetFileName(d).Contains(".tmp-") || d.Contains(".old-"));
    }

    [Fact]
    public void ConfigFileOptionsAndFlagsCombine()
    {
        string path = Path.Combine(_dir, "train.json");
        File.WriteAllText(path, """{"steps": 7, "capacity-factor": 1.5, "router": "rectify", "hidden": 32, "fill_in": false}""");
        var values = TrainOptions.ReadConfigFile(path);
        values["steps"] = "9";   // a flag given on the command line wins
        var o = TrainOptions.FromValues(values, "test");
        Assert.Equal(9, o.Steps);
        Assert.Equal(32, o.Hidden);
        Assert.Equal("rectify", o.Router.Name);
        Assert.Equal("1.5", o.Router.Options["capacity_factor"]);
        Assert.Equal("false", o.Router.Options["fill_in"]);
        Assert.Throws<CliException>(() => TrainOptions.FromValues(new Dictionary<string, string> { ["stepz"] = "1" }, "test"));
        // The saved form round-trips.
        Assert.Equal(o with { }, TrainOptions.FromValues(o.ToValues(), "again") with { Router = o.Router });
        Assert.Equal(o.Router.ToJson(), TrainOptions.FromValues(o.ToValues(), "again").Router.ToJson());
    }

    [Fact]
    public void DevicesMustDivideTheExperts()
    {
        var e = Assert.Throws<CliException>(() => TrainCommand.Run(Tiny() with { Devices = 3 }, TextWriter.Null, TestContext.Current.CancellationToken));
        Assert.Contains("--devices 3", e.Message);
    }

    [Fact]
    public void ExpertParallelTrainingFollowsTheSingleDeviceRun()
    {
        // A dropless router with no regulariser decides per token, so P = 2 logical devices train the same model
        // up to float rounding (the gate's gradient is summed over ranks in another order).
        var o = Tiny() with { Router = RouterSpec.Create("topk", new Dictionary<string, string> { ["k"] = "1" }) };
        var one = TrainCommand.Run(o, TextWriter.Null, TestContext.Current.CancellationToken);
        var log = new StringWriter();
        var two = TrainCommand.Run(o with { Devices = 2 }, log, TestContext.Current.CancellationToken);
        for (int i = 0; i < one.TrainLosses.Count; i++)
            Assert.Equal(one.TrainLosses[i], two.TrainLosses[i], 1e-4 * Math.Abs(one.TrainLosses[i]));
        Assert.Contains("exchanged", log.ToString());
    }

    private static void CopyDir(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }
}
