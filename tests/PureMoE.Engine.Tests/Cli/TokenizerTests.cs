using PureMoE.Cli;
using PureMoE.Cli.Data;
using PureMoE.Moe.Models;

namespace PureMoE.Engine.Tests.Cli;

/// <summary>`train --tokenizer gpt2`: GPT-2's BPE from Microsoft.ML.Tokenizers, saved with the model, used by generate.</summary>
public sealed class TokenizerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("puremoe-tokenizer").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("bytes", 256)]
    [InlineData("gpt2", 50257)]
    public void TextRoundTripsThroughEitherTokenizer(string name, int vocab)
    {
        var tokenizer = TextTokenizer.Create(name);
        Assert.Equal(vocab, tokenizer.VocabSize);
        const string text = "First Citizen:\nBefore we proceed any further, hear me speak. Ünïcödé — 123+45\n";
        long[] ids = tokenizer.Encode(text);
        Assert.All(ids, id => Assert.InRange(id, 0, vocab - 1));
        Assert.Equal(text, tokenizer.Decode(ids));
        if (name == "gpt2")
        {
            Assert.True(ids.Length < text.Length / 2, $"{ids.Length} BPE tokens for {text.Length} characters");
            Assert.Equal([5962, 22307, 25], ids[..3]);   // "First", " Citizen", ":" as GPT-2 numbers them
        }
        var e = Assert.Throws<CliException>(() => TextTokenizer.Create("sentencepiece"));
        Assert.Contains("bytes, gpt2", e.Message);
    }

    private TrainOptions Tiny(string tokenizer) => new()
    {
        Steps = 3, Batch = 2, Seq = 16, Hidden = 16, FeedForward = 32, Layers = 1, Heads = 2, KvHeads = 1, Experts = 2, TopK = 1,
        Warmup = 1, EvalEvery = 100, EvalBatches = 1, Tokenizer = tokenizer,
    };

    [Fact]
    public void AModelTrainedWithGpt2TokensGeneratesWithThem()
    {
        var ct = TestContext.Current.CancellationToken;
        string dir = Path.Combine(_dir, "gpt2");
        var run = TrainCommand.Run(Tiny("gpt2") with { OutDir = dir }, TextWriter.Null, ct);
        Assert.Equal(50257, run.Model.Config.VocabSize);
        Assert.True(run.TrainLosses[0] > 10 && run.TrainLosses[0] < 11.5, $"first loss {run.TrainLosses[0]} (ln 50257 = 10.82)");
        Assert.True(File.Exists(Path.Combine(dir, TextTokenizer.FileName)));
        Assert.Equal("gpt2", TextTokenizer.ForModel(dir, 50257).Name);

        var a = GenerateCommand.RunTimed(dir, "The cat", 5, 1.0, 0.95, 3);
        Assert.Equal(a.Text, GenerateCommand.Run(dir, "The cat", 5, 1.0, 0.95, 3));
        Assert.StartsWith("The cat", a.Text);
        Assert.Equal(5, a.Tokens);
        Assert.True(a.Text.Length > "The cat".Length);

        // A resumed run keeps its tokenizer; --from checks it too.
        string ckpt = Path.Combine(_dir, "ckpt");
        TrainCommand.Run(Tiny("gpt2") with { CheckpointDir = ckpt, SaveEvery = 1 }, TextWriter.Null, ct);
        var e = Assert.Throws<CliException>(() => TrainCommand.Run(Tiny("bytes") with { ResumeDir = TrainCheckpoint.StepDir(ckpt, 1) }, TextWriter.Null, ct));
        Assert.Contains("option tokenizer", e.Message);
        var resumed = TrainCommand.Run(Tiny("gpt2") with { ResumeDir = TrainCheckpoint.StepDir(ckpt, 1) }, TextWriter.Null, ct);
        Assert.Equal(run.TrainLosses, resumed.TrainLosses);
        var from = Assert.Throws<CliException>(() => TrainCommand.Run(Tiny("bytes") with
        {
            FromDir = dir, Router = RouterSpec.Create("c2r", new Dictionary<string, string> { ["k"] = "1" }),
        }, TextWriter.Null, ct));
        Assert.Contains("--tokenizer gpt2", from.Message);

        // Without its tokenizer file the model's 50,257 tokens fit no byte-level reading: generate says so.
        File.Delete(Path.Combine(dir, TextTokenizer.FileName));
        var missing = Assert.Throws<CliException>(() => GenerateCommand.Run(dir, "x", 1, 1, 1, 1));
        Assert.Contains(TextTokenizer.FileName, missing.Message);
        Assert.Contains("50257", missing.Message);
    }
}
