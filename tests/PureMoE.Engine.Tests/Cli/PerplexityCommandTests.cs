using PureMoE.Cli;

namespace PureMoE.Engine.Tests.Cli;

/// <summary>`puremoe perplexity`: every token after the first predicted once, from its window.</summary>
public sealed class PerplexityCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("puremoe-ppl").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void EveryTokenIsScoredOnceAsTheModelPredictsIt()
    {
        string dir = Path.Combine(_dir, "model");
        TrainCommand.Run(new TrainOptions
        {
            Steps = 3, Batch = 2, Seq = 16, Hidden = 16, FeedForward = 32, Layers = 1, Heads = 2, KvHeads = 1, Experts = 2, TopK = 1,
            Warmup = 1, EvalEvery = 100, EvalBatches = 1, OutDir = dir,
        }, TextWriter.Null, TestContext.Current.CancellationToken);
        const string text = "the cat sees the dog; the dog follows the red ball down to the river, and 12+34=46.\n";   // 85 bytes
        string path = Path.Combine(_dir, "text.txt");
        File.WriteAllText(path, text);

        var log = new StringWriter();
        var score = PerplexityCommand.Run(dir, path, null, 2, log);
        Assert.Equal(16, score.Context);            // the context the model trained with
        Assert.Equal(text.Length - 1, score.Tokens);
        Assert.Equal(text.Length, score.Bytes);
        Assert.Contains("bits/byte", log.ToString());

        // The same number from scratch: each window [16w, 16w + 16] through the model, log-softmax in float64.
        var model = PureMoE.Moe.Models.MoeMixtral.Load(dir);
        model.Eval();
        long[] ids = text.Select(c => (long)c).ToArray();
        double nats = 0;
        for (int start = 0; start < ids.Length - 1; start += 16)
        {
            int length = Math.Min(17, ids.Length - start);
            double[] logits;
            using (Tensor.NoGrad()) logits = model.Forward(Tensor.FromArray(ids[start..(start + length)], 1, length)).ToDoubleArray();
            for (int i = 0; i < length - 1; i++)
            {
                var row = logits.AsSpan(i * 256, 256);
                double max = row.ToArray().Max(), sum = 0;
                foreach (double l in row) sum += Math.Exp(l - max);
                nats += max + Math.Log(sum) - row[(int)ids[start + i + 1]];
            }
        }
        Assert.Equal(nats / (text.Length - 1), score.Loss, 1e-5);
        Assert.Equal(score.Loss * score.Tokens / Math.Log(2) / score.Bytes, score.BitsPerByte, 12);
        Assert.Equal(Math.Exp(score.Loss), score.Perplexity, 12);

        // Batching and a shorter context change how windows are run, not what a window of a context scores.
        Assert.Equal(score.Loss, PerplexityCommand.Run(dir, path, 16, 7, TextWriter.Null).Loss, 1e-6);
        Assert.NotEqual(score.Loss, PerplexityCommand.Run(dir, path, 4, 2, TextWriter.Null).Loss);

        Assert.Contains("--context 0", Assert.Throws<CliException>(() => PerplexityCommand.Run(dir, path, 0, 2, TextWriter.Null)).Message);
        Assert.Contains("positions", Assert.Throws<CliException>(() => PerplexityCommand.Run(dir, path, 500, 2, TextWriter.Null)).Message);
        Assert.Contains("no such file", Assert.Throws<CliException>(() => PerplexityCommand.Run(dir, path + ".x", null, 2, TextWriter.Null)).Message);
    }
}
