using PureMoE.Cli;

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
}
