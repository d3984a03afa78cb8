using System.CommandLine;
using System.Globalization;
using System.Text;
using PureMoE.Cli.Data;
using PureMoE.Moe.Models;

namespace PureMoE.Cli;

/// <summary>
/// `puremoe perplexity --model DIR --text FILE [--context N --batch B --device D]`: how well a model predicts a text,
/// tokenised with the model's own tokenizer. The text is cut into windows of N + 1 tokens that overlap by one, so every
/// token after the first is predicted once, from up to N tokens before it. Reports the mean loss per token, its
/// perplexity, and bits per byte (the summed loss over the UTF-8 bytes of the text, in bits): the one figure that
/// compares models with different tokenizers.
/// </summary>
public static class PerplexityCommand
{
    /// <summary>The command with its options.</summary>
    public static Command Build()
    {
        var model = new Option<string>("--model") { Description = "model directory (from train --out, a checkpoint, or a Mixtral-format checkpoint with its tokenizer)", Required = true };
        var text = new Option<string>("--text") { Description = "UTF-8 text file to score", Required = true };
        var context = new Option<int?>("--context") { Description = "tokens each prediction may look back on [default: the context the model trained with, else its positions − 1]" };
        var batch = new Option<int>("--batch") { Description = "windows per forward pass", DefaultValueFactory = _ => 8 };
        var device = CliDevice.Create();
        var cmd = new Command("perplexity", "Score a text with a model: loss per token, perplexity, bits per byte") { model, text, context, batch, device };
        cmd.SetAction(r => CliErrors.Run(() =>
            Run(r.GetValue(model)!, r.GetValue(text)!, r.GetValue(context), r.GetValue(batch), Console.Out, r.GetValue(device)!)));
        return cmd;
    }

    /// <summary>What a text scored.</summary>
    /// <param name="Tokens">Tokens predicted (the text's tokens less the first).</param>
    /// <param name="Bytes">UTF-8 bytes of the text.</param>
    /// <param name="Loss">Mean next-token cross-entropy, nats per token.</param>
    /// <param name="Context">The context used.</param>
    public sealed record Score(int Tokens, long Bytes, double Loss, int Context)
    {
        /// <summary>e^loss.</summary>
        public double Perplexity => Math.Exp(Loss);

        /// <summary>The summed loss in bits, per byte of text.</summary>
        public double BitsPerByte => Bytes == 0 ? double.NaN : Loss * Tokens / Math.Log(2) / Bytes;
    }

    /// <summary>Scores the text (the command's body; tests call it directly).</summary>
    public static Score Run(string modelDir, string textPath, int? context, int batch, TextWriter log, string device = "cpu")
    {
        var on = CliDevice.Resolve(device);
        CliErrors.RequireModelDirectory("--model", modelDir);
        if (!File.Exists(textPath)) throw new CliException($"--text {textPath}: no such file");
        if (batch < 1) throw new CliException($"--batch {batch}: must be ≥ 1");
        var model = MoeMixtral.Load(modelDir, device: on);
        model.Eval();
        var tokenizer = TextTokenizer.ForModel(modelDir, model.Config.VocabSize);
        int positions = model.Config.MaxPositionEmbeddings;
        int n = context ?? TrainedContext(modelDir) ?? positions - 1;
        if (n < 1 || n + 1 > positions)
            throw new CliException($"--context {n}: must be in [1, {positions - 1}] (the model has {positions} positions)");

        string text = File.ReadAllText(textPath);
        long[] ids = tokenizer.Encode(text);
        if (ids.Length < 2) throw new CliException($"--text {textPath}: {ids.Length} token(s); scoring needs at least 2");

        // Window w covers tokens [w·n, w·n + n] and predicts its last n; what is left makes one shorter window.
        int full = (ids.Length - 1) / n, rest = (ids.Length - 1) % n;
        double nats = 0;
        int predicted = 0;
        void AddWindows(int first, int rows, int length)
        {
            using var scope = DeviceScope.Begin(reuseHostMemory: true);
            var window = new long[rows * length];
            for (int r = 0; r < rows; r++) Array.Copy(ids, first + r * n, window, r * length, length);
            // Loss is the mean over the rows × (length − 1) predictions.
            nats += model.Loss(Tensor.FromHost(window, [rows, length], on)).Item() * rows * (length - 1);
            predicted += rows * (length - 1);
        }
        using (Tensor.NoGrad())
        {
            for (int w = 0; w < full; w += batch) AddWindows(w * n, Math.Min(batch, full - w), n + 1);
            if (rest > 0) AddWindows(full * n, 1, rest + 1);
        }
        var score = new Score(predicted, Encoding.UTF8.GetByteCount(text), nats / predicted, n);
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"perplexity: {textPath}, {score.Tokens:N0} {(tokenizer == TextTokenizer.Bytes ? "byte" : tokenizer.Name)} tokens predicted ({score.Bytes:N0} bytes), context {n}: " +
            $"loss {score.Loss:F4} nats/token, perplexity {score.Perplexity:F3}, {score.BitsPerByte:F4} bits/byte"));
        return score;
    }

    // The context a `puremoe train` checkpoint trained with (its saved "seq" option), if the directory is one.
    private static int? TrainedContext(string modelDir)
    {
        if (!File.Exists(Path.Combine(modelDir, TrainCheckpoint.StateFile))) return null;
        try
        {
            return TrainCheckpoint.Open(modelDir).State.Options.TryGetValue("seq", out string? seq)
                && int.TryParse(seq, NumberStyles.Integer, CultureInfo.InvariantCulture, out int s) ? s : null;
        }
        catch (CliException)
        {
            return null;   // a damaged trainer state: fall back to the model's positions
        }
    }
}
