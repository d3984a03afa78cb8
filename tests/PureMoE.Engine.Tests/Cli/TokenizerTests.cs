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

    // tiny-sentencepiece.model: 320 BPE pieces with byte fallback, made by Data/make_tiny_sentencepiece.py.
    private static string SentencePieceFixture => Path.Combine(AppContext.BaseDirectory, "Data", "tiny-sentencepiece.model");

    [Fact]
    public void AHuggingFaceCheckpointsSentencePieceModelTokenizesAsSentencePieceDoes()
    {
        var sp = TextTokenizer.FromSentencePiece(SentencePieceFixture);
        Assert.Equal(320, sp.VocabSize);
        Assert.Equal(2, sp.EndOfText);
        // The ids Google's SentencePiece 0.1.97 gives (printed by the script that made the model), after Llama's BOS (1).
        const string sample = "the king sees a red ball 42 ünï";
        long[] expected = [1, 274, 286, 293, 292, 296, 300, 264, 287, 259, 270, 272, 286, 305, 290, 261, 286, 316, 315, 286, 198, 191, 296, 198, 178];
        Assert.Equal(expected, sp.Encode(sample));
        Assert.Equal(sample, sp.Decode(expected));

        // A Mixtral-format directory with tokenizer.model: generate reads and writes text with it.
        string dir = Path.Combine(_dir, "hf");
        var config = new PureMoE.Models.MixtralConfig
        {
            VocabSize = 320, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 1,
            NumLocalExperts = 2, NumExpertsPerTok = 1, MaxPositionEmbeddings = 64,
        };
        MoeMixtral.Save(MoeMixtral.Create(config, new Rng(3)), dir);
        File.Copy(SentencePieceFixture, Path.Combine(dir, TextTokenizer.SentencePieceFile));
        Assert.Equal("sentencepiece", TextTokenizer.ForModel(dir, 320).Name);
        var a = GenerateCommand.RunTimed(dir, "the king", 6, 1.0, 1.0, 5);
        Assert.StartsWith("the king", a.Text);
        Assert.Equal(a.Text, GenerateCommand.Run(dir, "the king", 6, 1.0, 1.0, 5));

        // A model may have more rows than the tokenizer has pieces (padded vocabularies), not fewer.
        var small = Assert.Throws<CliException>(() => TextTokenizer.ForModel(dir, 300));
        Assert.Contains("320 pieces", small.Message);
        File.WriteAllBytes(Path.Combine(_dir, "bad.model"), [1, 2, 3, 4, 5]);
        Assert.Contains("not a SentencePiece model", Assert.Throws<CliException>(() => TextTokenizer.FromSentencePiece(Path.Combine(_dir, "bad.model"))).Message);
    }

    [Fact]
    public void GenerationStopsAtTheEndOfTextToken()
    {
        // Tokens after EOS (2) are never asked for: this stream would throw if they were.
        static IEnumerable<long> Stream()
        {
            yield return 7;
            yield return 9;
            yield return 2;
            throw new InvalidOperationException("a token after the end of the text was computed");
        }
        int taken = 0;
        Assert.Equal([7L, 9L], GenerateCommand.UntilEndOfText(Stream(), 2, () => taken++).ToArray());
        Assert.Equal(3, taken);
        Assert.Equal([7L, 9L, 5L], GenerateCommand.UntilEndOfText([7L, 9L, 5L], null).ToArray());
    }

    [Theory]
    [InlineData("bytes")]
    [InlineData("gpt2")]
    [InlineData("sentencepiece")]
    public void StreamedTextAddsUpToTheGeneratedText(string tokenizer)
    {
        string dir = Path.Combine(_dir, "stream-" + tokenizer);
        TrainCommand.Run(Tiny(tokenizer == "sentencepiece" ? SentencePieceFixture : tokenizer) with { Steps = 1, OutDir = dir }, TextWriter.Null,
            TestContext.Current.CancellationToken);
        foreach (ulong seed in new ulong[] { 1, 2, 3 })
        {
            var pieces = new List<string>();
            var streamed = GenerateCommand.RunTimed(dir, "the cat ün", 12, 1.5, 1.0, seed, onText: pieces.Add);
            Assert.Equal(streamed.Text, string.Concat(pieces));
            Assert.Equal(GenerateCommand.Run(dir, "the cat ün", 12, 1.5, 1.0, seed), streamed.Text);
            Assert.StartsWith("the cat ün", pieces[0]);
            Assert.True(pieces.Count > 1);
        }
    }

    [Fact]
    public void TrainingWithASentencePieceModelSavesItAsTheCheckpointsTokenizer()
    {
        var ct = TestContext.Current.CancellationToken;
        string dir = Path.Combine(_dir, "sp");
        var run = TrainCommand.Run(Tiny(SentencePieceFixture) with { OutDir = dir }, TextWriter.Null, ct);
        Assert.Equal(320, run.Model.Config.VocabSize);
        Assert.InRange(run.TrainLosses[0], 5.2, 6.4);   // ≈ ln 320 = 5.77 at initialisation
        // Saved as a Hugging Face checkpoint carries it, so generate (and any Llama-tokenizer reader) finds it.
        Assert.Equal(File.ReadAllBytes(SentencePieceFixture), File.ReadAllBytes(Path.Combine(dir, TextTokenizer.SentencePieceFile)));
        Assert.False(File.Exists(Path.Combine(dir, TextTokenizer.FileName)));
        Assert.StartsWith("the cat", GenerateCommand.Run(dir, "the cat", 4, 0, 1, 1));
        Assert.Equal("sentencepiece", TextTokenizer.Kind(SentencePieceFixture));

        var missing = Assert.Throws<CliException>(() => TrainCommand.Run(Tiny(Path.Combine(_dir, "none.model")), TextWriter.Null, ct));
        Assert.Contains("no such file", missing.Message);

        // A checkpoint resumes on its own: with the SentencePiece file gone from where it was, the run takes the
        // checkpoint's copy, gives the same losses, and keeps saving it (past the rotation of the step it came from).
        string moved = Path.Combine(_dir, "moved.model"), ckpt = Path.Combine(_dir, "sp-ckpt");
        File.Copy(SentencePieceFixture, moved);
        var o = Tiny(moved) with { Steps = 4 };
        var full = TrainCommand.Run(o, TextWriter.Null, ct);
        TrainCommand.Run(o with { CheckpointDir = ckpt, SaveEvery = 2, Keep = 0 }, TextWriter.Null, ct);
        File.Delete(moved);
        string copy = Path.Combine(_dir, "step-2-copy");
        Directory.CreateDirectory(copy);
        foreach (string f in Directory.GetFiles(TrainCheckpoint.StepDir(ckpt, 2))) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        var resumedRun = TrainCommand.Run(o with { ResumeDir = copy, CheckpointDir = Path.Combine(_dir, "sp-ckpt2"), SaveEvery = 1, Keep = 1 },
            TextWriter.Null, ct);
        Assert.Equal(full.TrainLosses, resumedRun.TrainLosses);
        Assert.True(File.Exists(Path.Combine(TrainCheckpoint.StepDir(Path.Combine(_dir, "sp-ckpt2"), 4), TextTokenizer.SentencePieceFile)));
    }

    [Fact]
    public void TiedEmbeddingsShareTheVocabularysWeights()
    {
        var ct = TestContext.Current.CancellationToken;
        string dir = Path.Combine(_dir, "tied");
        var untied = TrainCommand.Run(Tiny("gpt2") with { Steps = 1 }, TextWriter.Null, ct);
        var tied = TrainCommand.Run(Tiny("gpt2") with { Steps = 2, TieEmbeddings = true, OutDir = dir }, TextWriter.Null, ct);
        Assert.Equal(untied.Model.ParameterCount - 50257L * 16, tied.Model.ParameterCount);
        Assert.Contains(untied.Model.NamedParameters(), p => p.Name == "lm_head.weight");
        Assert.DoesNotContain(tied.Model.NamedParameters(), p => p.Name == "lm_head.weight");   // the output reads embed_tokens
        Assert.Contains("\"tie_word_embeddings\": true", File.ReadAllText(Path.Combine(dir, "config.json")));
        Assert.StartsWith("The cat", GenerateCommand.Run(dir, "The cat", 3, 0, 1, 1));
        Assert.Equal("true", (Tiny("gpt2") with { TieEmbeddings = true }).ToValues()["tie-embeddings"]);
        Assert.False(Tiny("gpt2").ToValues().ContainsKey("tie-embeddings"));
    }
}
