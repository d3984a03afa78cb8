using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;

namespace PureMoE.Cli.Data;

/// <summary>
/// How a model's text becomes token ids and back. <c>bytes</c> (the default): each UTF-8 byte is a token, vocabulary
/// 256, nothing to learn. <c>gpt2</c>: GPT-2's byte-level BPE (Microsoft.ML.Tokenizers, its 50,257-token vocabulary
/// embedded in the package), about 3.3 bytes per token on English text, so a context of the same length sees more text,
/// at the price of a 50,257-row embedding and output layer. A model directory names its tokenizer in
/// <see cref="FileName"/>; a Hugging Face Llama/Mixtral checkpoint brings its SentencePiece <c>tokenizer.model</c>
/// (read by Microsoft.ML.Tokenizers' LlamaTokenizer, prompts begin with its BOS); a directory with neither is byte-level.
/// </summary>
public sealed class TextTokenizer
{
    /// <summary>The file in a model directory that names its tokenizer.</summary>
    public const string FileName = "puremoe_tokenizer.json";

    /// <summary>A Hugging Face checkpoint's SentencePiece model, beside its config.json.</summary>
    public const string SentencePieceFile = "tokenizer.model";

    /// <summary>The tokenizers <see cref="Create"/> knows.</summary>
    public static IReadOnlyList<string> Names { get; } = ["bytes", "gpt2"];

    private readonly Tokenizer? _subwords;

    // A SentencePiece model's file as read, written again by SaveTo (its source may be gone by then: a rotated checkpoint).
    private readonly byte[]? _modelFile;

    private TextTokenizer(string name, int vocabSize, Tokenizer? subwords, long? endOfText = null, byte[]? modelFile = null) =>
        (Name, VocabSize, _subwords, EndOfText, _modelFile) = (name, vocabSize, subwords, endOfText, modelFile);

    /// <summary>The byte-level tokenizer (vocabulary 256).</summary>
    public static TextTokenizer Bytes { get; } = new("bytes", 256, null);

    /// <summary>"bytes", "gpt2" or "sentencepiece".</summary>
    public string Name { get; }

    /// <summary>Token ids run from 0 to VocabSize − 1.</summary>
    public int VocabSize { get; }

    /// <summary>The token that ends a text (SentencePiece's EOS), after which generate keeps nothing; null if none.</summary>
    public long? EndOfText { get; }


    /// <summary>A SentencePiece tokenizer from a <c>tokenizer.model</c> file (BOS added to encoded text, as Llama's).</summary>
    public static TextTokenizer FromSentencePiece(string path)
    {
        try
        {
            byte[] file = File.ReadAllBytes(path);
            var sp = LlamaTokenizer.Create(new MemoryStream(file, writable: false), addBeginOfSentence: true, addEndOfSentence: false);
            return new TextTokenizer("sentencepiece", sp.Vocabulary.Count, sp, sp.EndOfSentenceId, file);
        }
        catch (Exception e) when (e is not OutOfMemoryException)   // the reader's own parse errors have no common type
        {
            throw new CliException($"{path}: not a SentencePiece model ({e.Message})");
        }
    }

    /// <summary>
    /// The tokenizer called <paramref name="name"/> (one of <see cref="Names"/>), or the SentencePiece model at a path
    /// ending in ".model" (a Llama checkpoint's tokenizer.model, say).
    /// </summary>
    public static TextTokenizer Create(string name) => name switch
    {
        "bytes" => Bytes,
        // 50,256 merged tokens plus <|endoftext|> (id 50256), as GPT-2's vocabulary.
        "gpt2" => new("gpt2", 50257, TiktokenTokenizer.CreateForModel("gpt2")),
        _ when IsSentencePiecePath(name) => File.Exists(name) ? FromSentencePiece(name) : throw new CliException($"--tokenizer {name}: no such file"),
        _ => throw new CliException($"--tokenizer {name}: unknown (tokenizers: {string.Join(", ", Names)}, or a SentencePiece .model file)"),
    };

    /// <summary>What kind of tokenizer a --tokenizer value names: "bytes", "gpt2" or "sentencepiece" (a .model path).</summary>
    public static string Kind(string name) => IsSentencePiecePath(name) ? "sentencepiece" : name;

    private static bool IsSentencePiecePath(string name) => name.EndsWith(".model", StringComparison.OrdinalIgnoreCase);

    /// <summary>The text as token ids.</summary>
    public long[] Encode(string text) =>
        _subwords is null ? Encoding.UTF8.GetBytes(text).Select(b => (long)b).ToArray() : _subwords.EncodeToIds(text).Select(i => (long)i).ToArray();

    /// <summary>
    /// The text of token ids. Byte-level: a continuation may end inside a UTF-8 sequence, and invalid bytes decode
    /// as U+FFFD; subword tokens decode to their bytes the same way (SentencePiece leaves out BOS and EOS).
    /// </summary>
    public string Decode(IEnumerable<long> ids) =>
        _subwords is null ? PureMoE.Models.TextGeneration.Decode(ids) : _subwords.Decode(ids.Select(i => (int)i)) ?? "";

    /// <summary>
    /// Records this tokenizer in a model directory: nothing for bytes (the default), a copy of a SentencePiece model as
    /// tokenizer.model (as Hugging Face checkpoints carry it), else <see cref="FileName"/> naming it.
    /// </summary>
    public void SaveTo(string modelDir)
    {
        if (this == Bytes) return;
        if (_modelFile is not null)
        {
            File.WriteAllBytes(Path.Combine(modelDir, SentencePieceFile), _modelFile);
            return;
        }
        File.WriteAllText(Path.Combine(modelDir, FileName), new JsonObject { ["name"] = Name }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// The tokenizer of a model directory (<see cref="FileName"/>, else its <see cref="SentencePieceFile"/>, else
    /// byte-level), checked against the model's vocabulary: a model whose vocabulary its tokenizer does not fit is a
    /// <see cref="CliException"/> naming both.
    /// </summary>
    public static TextTokenizer ForModel(string modelDir, int modelVocab)
    {
        string path = Path.Combine(modelDir, FileName), sentencePiece = Path.Combine(modelDir, SentencePieceFile);
        TextTokenizer tokenizer;
        if (!File.Exists(path) && File.Exists(sentencePiece))
        {
            // A checkpoint may pad its vocabulary past the tokenizer's pieces, never the other way round.
            tokenizer = FromSentencePiece(sentencePiece);
            if (tokenizer.VocabSize > modelVocab)
                throw new CliException($"--model {modelDir}: vocabulary {modelVocab}, but {SentencePieceFile} has {tokenizer.VocabSize} pieces");
            return tokenizer;
        }
        if (!File.Exists(path)) tokenizer = Bytes;
        else
        {
            string? name;
            try { name = JsonNode.Parse(File.ReadAllText(path))?["name"]?.GetValue<string>(); }
            catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
            {
                throw new CliException($"{path}: not a tokenizer file ({e.Message})");
            }
            tokenizer = Create(name ?? throw new CliException($"{path}: no \"name\""));
        }
        if (tokenizer.VocabSize != modelVocab)
            throw new CliException($"--model {modelDir}: vocabulary {modelVocab}, but its tokenizer ({tokenizer.Name}" +
                                   (File.Exists(path) ? $", from {FileName}" : $": no {FileName} or {SentencePieceFile}, so bytes") + $") has {tokenizer.VocabSize} tokens");
        return tokenizer;
    }
}
