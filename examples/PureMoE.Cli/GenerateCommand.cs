using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PureMoE.Cli.Data;
using PureMoE.Moe.Models;

namespace PureMoE.Cli;

/// <summary>
/// `puremoe generate --model DIR --prompt TEXT [--tokens N --temperature T --top-p P --seed S --device D]`: continues a prompt
/// with a model trained by `puremoe train` (its tokenizer: bytes, or GPT-2's BPE; KV cache, nucleus sampling), deterministic for a seed. Without --tokens it generates up to
/// <see cref="DefaultTokens"/>, as many as the model's context leaves after the prompt.
/// </summary>
public static class GenerateCommand
{
    /// <summary>The command with its options.</summary>
    public static Command Build()
    {
        var model = new Option<string>("--model") { Description = "model directory (from train --out or a checkpoint)", Required = true };
        var prompt = new Option<string>("--prompt") { Description = "text to continue", Required = true };
        var tokens = new Option<int?>("--tokens") { Description = $"new tokens (bytes, or BPE tokens for a model trained with --tokenizer gpt2) to generate [default: {DefaultTokens}, or as many as the model's context leaves after the prompt]" };
        var temperature = new Option<double>("--temperature") { Description = "sampling temperature (≤ 0: greedy)", DefaultValueFactory = _ => 0.8 };
        var topP = new Option<double>("--top-p") { Description = "nucleus: sample from the most likely tokens up to this probability", DefaultValueFactory = _ => 0.95 };
        var seed = new Option<ulong>("--seed") { Description = "sampling seed", DefaultValueFactory = _ => 1 };
        var device = CliDevice.Create();
        var cmd = new Command("generate", "Continue a prompt with a trained model (byte-level or GPT-2 BPE; KV cache)") { model, prompt, tokens, temperature, topP, seed, device };
        cmd.SetAction(r => CliErrors.Run(() =>
        {
            // The text appears as it is generated (Console.Out flushes each write).
            var result = RunTimed(r.GetValue(model)!, r.GetValue(prompt)!, r.GetValue(tokens), r.GetValue(temperature), r.GetValue(topP), r.GetValue(seed), r.GetValue(device)!,
                Console.Out.Write);
            Console.Out.WriteLine();
            // The timings go to stderr, so the text on stdout stays clean for a pipe.
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"generated {result.Tokens} tokens in {result.GenerateSeconds:F2} s ({result.Tokens / Math.Max(result.GenerateSeconds, 1e-9):F1} tokens/s, prompt included); model loaded in {result.LoadSeconds:F2} s"));
        }));
        return cmd;
    }

    /// <summary>The most new tokens generated when --tokens is not given (fewer when the model's context ends first).</summary>
    public const int DefaultTokens = 200;

    /// <summary>
    /// The prompt followed by its continuation (the command's body; tests call it directly). <paramref name="tokens"/>
    /// null: up to <see cref="DefaultTokens"/>, as many as the context leaves.
    /// </summary>
    public static string Run(string modelDir, string prompt, int? tokens, double temperature, double topP, ulong seed, string device = "cpu") =>
        RunTimed(modelDir, prompt, tokens, temperature, topP, seed, device).Text;

    /// <summary>What <see cref="RunTimed"/> gives: the text, and the seconds spent loading the model and generating.</summary>
    public sealed record Result(string Text, int Tokens, double LoadSeconds, double GenerateSeconds);

    /// <summary>
    /// <see cref="Run"/>, timed; with <paramref name="onText"/>, the text is also handed over piece by piece as it is
    /// generated (the prompt first), the pieces adding up to the result's text.
    /// </summary>
    public static Result RunTimed(string modelDir, string prompt, int? tokens, double temperature, double topP, ulong seed, string device = "cpu",
        Action<string>? onText = null)
    {
        var clock = Stopwatch.StartNew();
        var on = CliDevice.Resolve(device);
        CliErrors.RequireModelDirectory("--model", modelDir);
        if (tokens < 0) throw new CliException($"--tokens {tokens}: must be ≥ 0");
        if (topP is <= 0 or > 1) throw new CliException($"--top-p {topP}: must be in (0, 1]");
        var model = MoeMixtral.Load(modelDir, device: on);
        var tokenizer = TextTokenizer.ForModel(modelDir, model.Config.VocabSize);
        long[] promptIds = tokenizer.Encode(prompt);
        if (promptIds.Length == 0) throw new CliException("--prompt: must not be empty");
        string unit = tokenizer == TextTokenizer.Bytes ? "bytes" : tokenizer.Name + " tokens";
        int maxPositions = model.Config.MaxPositionEmbeddings;
        int room = maxPositions - promptIds.Length;
        if (room <= 0)
            throw new CliException($"--prompt: {promptIds.Length} {unit} fill the model's {maxPositions} positions; nothing is left to generate (shorten the prompt)");
        if (tokens > room)
            throw new CliException($"--tokens {tokens}: prompt ({promptIds.Length} {unit}) + tokens exceeds the model's {maxPositions} positions (at most {room} with this prompt)");
        int count = tokens ?? Math.Min(DefaultTokens, room);
        model.Eval();
        double load = clock.Elapsed.TotalSeconds;
        clock.Restart();
        var all = new List<long>(promptIds);
        var shown = new TextStream(tokenizer, onText);
        shown.Update(all, final: false);
        int generated = 0;
        var stream = model.GenerateTokens(Tensor.FromHost(promptIds, [1, promptIds.Length], on), count, temperature, topP, new Rng(seed));
        foreach (long token in UntilEndOfText(stream, tokenizer.EndOfText, () => generated++))
        {
            all.Add(token);
            shown.Update(all, final: false);
        }
        string text = shown.Update(all, final: true);
        return new Result(text, generated, load, clock.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// The tokens of <paramref name="tokens"/> before the first <paramref name="endOfText"/> (SentencePiece's EOS: a
    /// text ends there), which is not yielded and after which nothing more is asked for (no more tokens computed);
    /// <paramref name="onEach"/> counts every token taken, the end-of-text one included.
    /// </summary>
    public static IEnumerable<long> UntilEndOfText(IEnumerable<long> tokens, long? endOfText, Action? onEach = null)
    {
        foreach (long token in tokens)
        {
            onEach?.Invoke();
            if (token == endOfText) yield break;
            yield return token;
        }
    }

    // Hands text over as it grows: each time, what the ids decode to beyond what was handed over, except a trailing
    // U+FFFD (a UTF-8 sequence the next token may complete) until the end.
    private sealed class TextStream(TextTokenizer tokenizer, Action<string>? onText)
    {
        private string _shown = "";

        public string Update(List<long> ids, bool final)
        {
            if (onText is null && !final) return _shown;
            string text = tokenizer.Decode(ids);
            int stable = text.Length;
            while (!final && stable > 0 && text[stable - 1] == '\uFFFD') stable--;
            if (onText is not null && stable > _shown.Length && text.StartsWith(_shown, StringComparison.Ordinal))
            {
                onText(text[_shown.Length..stable]);
                _shown = text[..stable];
            }
            return text;
        }
    }
}
