
namespace PureMoE.Cli.Data;

/// <summary>
/// The tokens of a text (<see cref="TextTokenizer"/>: bytes by default), split into a training and a validation part,
/// served as deterministic random windows [batch, seq+1] (inputs and their next-token targets in one).
/// </summary>
public sealed class TokenBatches
{
    private readonly long[] _train, _valid;

    /// <summary>
    /// Tokenises <paramref name="text"/> with <paramref name="tokenizer"/> (UTF-8 bytes when null); the last
    /// <paramref name="validFraction"/> of the tokens is validation.
    /// </summary>
    public TokenBatches(string text, TextTokenizer? tokenizer = null, double validFraction = 0.1)
    {
        Tokenizer = tokenizer ?? TextTokenizer.Bytes;
        long[] tokens = Tokenizer.Encode(text);
        if (tokens.Length < 64)
            throw new ArgumentException($"the training text is too short ({tokens.Length} {(Tokenizer == TextTokenizer.Bytes ? "bytes" : Tokenizer.Name + " tokens")}; need at least 64)");
        int split = (int)(tokens.Length * (1 - validFraction));
        _train = tokens[..split];
        _valid = tokens[split..];
    }

    /// <summary>How the text became tokens.</summary>
    public TextTokenizer Tokenizer { get; }

    /// <summary>Training tokens.</summary>
    public int TrainLength => _train.Length;

    /// <summary>Validation tokens.</summary>
    public int ValidLength => _valid.Length;

    /// <summary>A batch of <paramref name="batch"/> random windows of seq+1 tokens from the training part.</summary>
    public Tensor TrainBatch(int batch, int seq, Rng rng) => Windows(_train, batch, seq, i => rng.NextInt(_train.Length - seq - 1));

    /// <summary>
    /// The fixed validation batches: <paramref name="count"/> batches of evenly spaced windows (the same every call).
    /// </summary>
    public IEnumerable<Tensor> ValidBatches(int count, int batch, int seq)
    {
        int windows = count * batch, span = Math.Max(1, (_valid.Length - seq - 1) / Math.Max(windows, 1));
        for (int c = 0; c < count; c++)
            yield return Windows(_valid, batch, seq, i => Math.Min((c * batch + i) * span, _valid.Length - seq - 1));
    }

    private static Tensor Windows(long[] tokens, int batch, int seq, Func<int, int> start)
    {
        if (tokens.Length < seq + 2) throw new ArgumentException($"a sequence of {seq + 1} tokens does not fit in {tokens.Length} tokens; use a shorter --seq");
        var data = new long[batch * (seq + 1)];
        for (int b = 0; b < batch; b++)
            Array.Copy(tokens, start(b), data, b * (seq + 1), seq + 1);
        return Tensor.FromArray(data, batch, seq + 1);
    }
}
