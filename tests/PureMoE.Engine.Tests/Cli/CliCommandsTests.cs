using System.Globalization;
using PureMoE.Cli;
using PureMoE.Moe.Models;

namespace PureMoE.Engine.Tests.Cli;

/// <summary>generate, inspect and compare on tiny settings.</summary>
public sealed class CliCommandsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("puremoe-cli").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string TrainTiny(string router, Dictionary<string, string> options)
    {
        string dir = Path.Combine(_dir, router);
        TrainCommand.Run(new TrainOptions
        {
            Steps = 6, Batch = 4, Seq = 16, Hidden = 32, FeedForward = 48, Layers = 2, Experts = 4, TopK = 1, Warmup = 2,
            EvalEvery = 100, EvalBatches = 1, OutDir = dir, Router = RouterSpec.Create(router, options),
        }, TextWriter.Null, TestContext.Current.CancellationToken);
        return dir;
    }

    [Fact]
    public void GenerateIsDeterministicForASeed()
    {
        string dir = TrainTiny("topk", []);
        string a = GenerateCommand.Run(dir, "the cat", 24, 1.0, 0.95, 7);
        string b = GenerateCommand.Run(dir, "the cat", 24, 1.0, 0.95, 7);
        Assert.Equal(a, b);
        Assert.StartsWith("the cat", a);
        var others = Enumerable.Range(8, 4).Select(s => GenerateCommand.Run(dir, "the cat", 24, 1.0, 0.95, (ulong)s));
        Assert.Contains(others, o => o != a);
        Assert.Equal(GenerateCommand.Run(dir, "x", 5, 0, 1, 1), GenerateCommand.Run(dir, "x", 5, 0, 1, 2));   // greedy ignores the seed
        Assert.Throws<CliException>(() => GenerateCommand.Run(Path.Combine(_dir, "missing"), "x", 5, 1, 1, 1));

        // The timed form (what the command prints its rate from) gives the same text.
        var timed = GenerateCommand.RunTimed(dir, "the cat", 24, 1.0, 0.95, 7);
        Assert.Equal(a, timed.Text);
        Assert.Equal(24, timed.Tokens);
        Assert.True(timed.LoadSeconds > 0 && timed.GenerateSeconds > 0);
    }

    [Fact]
    public void GenerateWithoutTokensFillsWhatTheContextLeaves()
    {
        // A model trained with the defaults has a context shorter than the default 200 tokens: generate must still run.
        string dir = TrainTiny("topk", []);
        int positions = PureMoE.Models.MixtralConfig.Load(Path.Combine(dir, "config.json")).MaxPositionEmbeddings;
        Assert.True(positions - 7 < GenerateCommand.DefaultTokens);
        var filled = GenerateCommand.RunTimed(dir, "the cat", null, 0, 1, 1);
        Assert.Equal(positions - 7, filled.Tokens);
        Assert.StartsWith("the cat", filled.Text);
        Assert.Equal(GenerateCommand.Run(dir, "the cat", positions - 7, 0, 1, 1), filled.Text);

        // Asking for more than the context leaves says how many it can give; a prompt that fills it is an error.
        var tooMany = Assert.Throws<CliException>(() => GenerateCommand.Run(dir, "the cat", positions - 6, 0, 1, 1));
        Assert.Contains($"at most {positions - 7} with this prompt", tooMany.Message);
        var full = Assert.Throws<CliException>(() => GenerateCommand.Run(dir, new string('a', positions), null, 0, 1, 1));
        Assert.Contains("nothing is left to generate", full.Message);
    }

    [Fact]
    public void InspectPrintsTheRouterAndSavedStats()
    {
        string dir = TrainTiny("rectify", new() { ["k"] = "1", ["capacity_factor"] = "1.0" });
        var log = new StringWriter();
        InspectCommand.Run(dir, log);
        string text = log.ToString();
        Assert.Contains("router: rectify", text);
        Assert.Contains("capacity_factor=1", text);
        Assert.Contains("RectifyOptions", text);
        Assert.Contains("training: step 6", text);
        Assert.Contains("routing statistics of the last training step", text);
        Assert.Contains("parameters:", text);
    }

    [Fact]
    public void CompareWritesResultsAndPngPlots()
    {
        var o = new TrainOptions
        {
            Steps = 6, Batch = 4, Seq = 16, Hidden = 32, FeedForward = 48, Layers = 2, Experts = 4, Warmup = 2, EvalEvery = 3, EvalBatches = 1,
        };
        string outDir = Path.Combine(_dir, "compare");
        var runs = CompareCommand.Run(o, outDir, [1], null, TextWriter.Null, TestContext.Current.CancellationToken);
        Assert.Equal(CompareCommand.Configs.Count, runs.Count);
        string md = File.ReadAllText(Path.Combine(outDir, "results.md"));
        foreach (var c in CompareCommand.Configs) Assert.Contains($"| {c.Name}:", md);
        Assert.Contains("bytes exchanged", md);
        // Each run's own peak memory (the high-water mark reset before it, on Linux), in its own column.
        Assert.Contains("| tokens/s | peak MiB |", md);
        if (OperatingSystem.IsLinux()) Assert.All(runs, r => Assert.True(r.PeakResidentBytes > 0, r.Config.Name));
        // Both C2R runs continued the TopK top-2 run: their first half is that run's; their second half differs
        // (1 candidate constrains the second expert more than 3 do).
        var topk2 = runs.Single(r => r.Config.Name == "topk2");
        foreach (string name in new[] { "c2r2", "c2r2-t1" })
        {
            var c2r = runs.Single(r => r.Config.Name == name);
            Assert.Equal(6, c2r.Result.TrainLosses.Count);
            Assert.Equal(6, c2r.History.Count);
            Assert.Equal(topk2.Result.TrainLosses.Take(3), c2r.Result.TrainLosses.Take(3));
        }
        Assert.NotEqual(runs.Single(r => r.Config.Name == "c2r2").Result.TrainLosses[5], runs.Single(r => r.Config.Name == "c2r2-t1").Result.TrainLosses[5]);
        string[] pngs = ["loss.png", "valid.png", "remoe.png", "coactivation.png", "load-topk1.png", "load-c2r2.png"];
        byte[] signature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];
        foreach (string png in pngs)
        {
            byte[] bytes = File.ReadAllBytes(Path.Combine(outDir, png));
            Assert.True(bytes.Length > 1000, png);
            Assert.Equal(signature, bytes[..8]);
        }
    }

    /// <summary>
    /// With --devices, a C2R row's bytes are those of the steps C2R routed (its continued half), not a mean that
    /// includes the TopK top-2 half it started from.
    /// </summary>
    [Fact]
    public void CompareBytesOfC2RAreOfItsOwnHalf()
    {
        var o = new TrainOptions
        {
            Steps = 6, Batch = 4, Seq = 16, Hidden = 32, FeedForward = 48, Layers = 2, Experts = 4, Warmup = 2, EvalEvery = 3, EvalBatches = 1,
            Devices = 2,
        };
        string outDir = Path.Combine(_dir, "compare-p2");
        var runs = CompareCommand.Run(o, outDir, [1], ["c2r2-t1"], TextWriter.Null, TestContext.Current.CancellationToken);
        var c2r = runs.Single(r => r.Config.Name == "c2r2-t1");
        Assert.Equal(3, c2r.Result.History.Count);
        Assert.All(c2r.History, h => Assert.True(h.DispatchBytes > 0));
        string Kib(IEnumerable<StepReport> steps) => (steps.Average(h => (double)h.DispatchBytes) / 1024).ToString("N0", CultureInfo.InvariantCulture) + " KiB";
        string row = File.ReadAllLines(Path.Combine(outDir, "results.md")).Single(l => l.StartsWith("| c2r2-t1:", StringComparison.Ordinal));
        Assert.EndsWith($"| {Kib(c2r.Result.History)} |", row);
    }
}
