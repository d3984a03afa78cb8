using PureMoE.Cli;
using PureMoE.Moe.Models;

namespace PureMoE.Engine.Tests.Cli;

public class TrainCommandTests
{
    private static TrainOptions Short(int steps) => new()
    {
        Steps = steps, Batch = 4, Seq = 32, Hidden = 32, FeedForward = 64, Layers = 1, Experts = 4, TopK = 2,
        Warmup = 5, EvalEvery = 1000, LearningRate = 3e-3,
    };

    [Fact]
    public void SameSeedGivesTheSameLossesToTheLastBit()
    {
        var a = TrainCommand.Run(Short(4), TextWriter.Null, TestContext.Current.CancellationToken);
        var b = TrainCommand.Run(Short(4), TextWriter.Null, TestContext.Current.CancellationToken);
        Assert.Equal(a.TrainLosses.Select(BitConverter.DoubleToInt64Bits), b.TrainLosses.Select(BitConverter.DoubleToInt64Bits));
        var c = TrainCommand.Run(Short(4) with { Seed = 2 }, TextWriter.Null, TestContext.Current.CancellationToken);
        Assert.NotEqual(a.TrainLosses[^1], c.TrainLosses[^1]);
    }

    [Fact]
    public void TheDoneLineGivesTheThroughputAfterTheFirstStep()
    {
        // The steady rate leaves out the first step (a GPU compiles its kernels there) and validation.
        var log = new StringWriter();
        var r = TrainCommand.Run(Short(3), log, TestContext.Current.CancellationToken);
        Assert.True(double.IsFinite(r.SteadyTokensPerSecond) && r.SteadyTokensPerSecond > 0, $"{r.SteadyTokensPerSecond}");
        Assert.Matches(@"done in [0-9.]+ s \([0-9,]+ tok/s; [0-9,]+ tok/s after the first step, validation excluded\)", log.ToString());
        Assert.Matches(@"host memory: peak [1-9][0-9,]* MiB resident \(the whole process: .*\); a step's arrays [0-9,]+\.[0-9] MiB", log.ToString());
        var one = TrainCommand.Run(Short(1), log, TestContext.Current.CancellationToken);
        Assert.True(double.IsNaN(one.SteadyTokensPerSecond));
    }

    [Fact]
    public void LossFallsOnTheEmbeddedCorpus()
    {
        var r = TrainCommand.Run(Short(60), TextWriter.Null, TestContext.Current.CancellationToken);
        // Byte-level start ≈ ln 256 = 5.5; the generated domains are learnable well below that.
        Assert.True(r.ValidLosses[^1].Loss < 0.75 * r.ValidLosses[0].Loss,
            $"validation loss {r.ValidLosses[0].Loss:F3} -> {r.ValidLosses[^1].Loss:F3}");
    }

    [Fact]
    public void MissingDataFileIsAClearError()
    {
        var ex = Assert.Throws<CliException>(() => TrainCommand.Run(Short(1) with { DataPath = "/no/such/file.txt" }, TextWriter.Null, TestContext.Current.CancellationToken));
        Assert.Contains("/no/such/file.txt", ex.Message);
    }

    [Fact]
    public void OutOfRangeOptionsAreNamedWithTheirValues()
    {
        var o = Short(0) with { Seq = 1, Clip = 0 };
        var ex = Assert.Throws<CliException>(() => TrainCommand.Run(o, TextWriter.Null, TestContext.Current.CancellationToken));
        Assert.Equal("train: out of range: --steps 0 (need ≥ 1), --seq 1 (need ≥ 2), --clip 0 (need > 0)", ex.Message);
    }

    [Fact]
    public void C2RFromScratchSaysWhereItsListsComeFrom()
    {
        var o = Short(1) with { Router = RouterSpec.Create("c2r", new Dictionary<string, string>()) };
        var ex = Assert.Throws<CliException>(() => TrainCommand.Run(o, TextWriter.Null, TestContext.Current.CancellationToken));
        Assert.StartsWith("--router c2r: C2R routes with collaboration lists profiled from a trained model; give --from DIR", ex.Message);
    }

    [Theory]
    [InlineData(4, 9, 32, 2, "train options: --k 9 exceeds --experts 4")]
    [InlineData(4, 0, 32, 2, "train options: --k must be positive, got 0")]
    [InlineData(4, 2, 30, 4, "train options: --hidden 30 is not divisible by --heads 4")]
    [InlineData(4, 2, 36, 4, "train options: head dimension --hidden / --heads = 9 must be even for rotary embeddings")]
    public void AnInconsistentModelShapeNamesTheFlags(int experts, int k, int hidden, int heads, string message)
    {
        // The model's config checks these; the error speaks of the flags the user typed, not config.json keys.
        var o = Short(1) with { Experts = experts, TopK = k, Hidden = hidden, Heads = heads, KvHeads = 1 };
        var ex = Assert.Throws<CliException>(() => TrainCommand.Run(o, TextWriter.Null, TestContext.Current.CancellationToken));
        Assert.Equal(message, ex.Message);
    }

    [Fact]
    public void ADirectoryWithoutAModelIsAClearError()
    {
        string empty = Directory.CreateTempSubdirectory("puremoe-not-a-model").FullName;
        try
        {
            string notModel = $"--model {empty}: not a model directory (no config.json";
            Assert.StartsWith(notModel, Assert.Throws<CliException>(() => GenerateCommand.Run(empty, "x", 1, 1, 1, 1)).Message);
            Assert.StartsWith(notModel, Assert.Throws<CliException>(() => InspectCommand.Run(empty, TextWriter.Null)).Message);
            Assert.StartsWith(notModel, Assert.Throws<CliException>(() =>
                EvalCommand.Run(empty, "tokens.safetensors", "out.safetensors", false, TextWriter.Null)).Message);
            var c2r = Short(1) with { FromDir = empty, Router = RouterSpec.Create("c2r", new Dictionary<string, string>()) };
            Assert.StartsWith($"--from {empty}: not a model directory",
                Assert.Throws<CliException>(() => TrainCommand.Run(c2r, TextWriter.Null, TestContext.Current.CancellationToken)).Message);
            string missing = Path.Combine(empty, "missing");
            Assert.Equal($"--model {missing}: no such model directory",
                Assert.Throws<CliException>(() => InspectCommand.Run(missing, TextWriter.Null)).Message);
        }
        finally
        {
            Directory.Delete(empty, recursive: true);
        }
    }

    [Fact]
    public void AnInvalidConfigFileIsAOneLineErrorWithExitCode1()
    {
        // config.json problems surface as InvalidDataException (naming the file and key): a user error, not a crash.
        Assert.Equal(1, CliErrors.Run(() => throw new InvalidDataException("config.json: 'hidden_size' must be positive, got 0")));
    }
}
