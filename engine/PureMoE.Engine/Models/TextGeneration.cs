using System.Text;

namespace PureMoE.Models;

/// <summary>
/// Byte-level text in and out of a causal language model: each UTF-8 byte is one token id (0–255), the tokenizer
/// of models trained by <c>puremoe train</c>. Thin helpers over <see cref="MixtralForCausalLM.Generate"/>.
/// </summary>
public static class TextGeneration
{
    /// <summary>The UTF-8 bytes of <paramref name="text"/> as int64 token ids [1, bytes] on <paramref name="device"/>.</summary>
    public static Tensor Encode(string text, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = Encoding.UTF8.GetBytes(text).Select(b => (long)b).ToArray();
        return Tensor.FromHost(ids, [1, ids.Length], device);
    }

    /// <summary>
    /// Token ids as UTF-8 text. Ids outside 0–255 (a vocabulary larger than bytes) become U+FFFD, and so do
    /// incomplete UTF-8 sequences.
    /// </summary>
    public static string Decode(IEnumerable<long> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var bytes = new List<byte>();
        var text = new StringBuilder();
        foreach (long id in ids)
        {
            if (id is >= 0 and <= 255) { bytes.Add((byte)id); continue; }
            text.Append(Encoding.UTF8.GetString([.. bytes])).Append('\uFFFD');
            bytes.Clear();
        }
        return text.Append(Encoding.UTF8.GetString([.. bytes])).ToString();
    }

    /// <summary>
    /// Continues <paramref name="prompt"/> by <paramref name="maxNewTokens"/> byte tokens and returns only the new
    /// text. Temperature ≤ 0 (the default) picks the most likely byte each step, deterministic; otherwise bytes are
    /// sampled with nucleus <paramref name="topP"/> from <paramref name="rng"/> (seed 0 when null).
    /// </summary>
    public static string Generate(MixtralForCausalLM model, string prompt, int maxNewTokens,
        double temperature = 0, double topP = 1.0, Rng? rng = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfNegative(maxNewTokens);
        if (string.IsNullOrEmpty(prompt))
            throw new ArgumentException("TextGeneration.Generate: the prompt needs at least one byte", nameof(prompt));
        var device = model.Parameters().FirstOrDefault()?.Device;
        var input = Encode(prompt, device);
        var output = model.Generate(input, maxNewTokens, temperature, topP, rng ?? new Rng(0));
        return Decode(output.ToLongArray().Skip(input.Size(1)));
    }
}
