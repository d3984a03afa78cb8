using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PureMoE.Models;

/// <summary>
/// The architecture hyperparameters of a Mixtral model, read from and written to a Hugging Face config.json with
/// the same keys. Keys this engine does not use (real configs have many) are ignored when reading.
/// </summary>
public sealed record MixtralConfig
{
    /// <summary>vocab_size: number of token ids.</summary>
    public int VocabSize { get; init; }

    /// <summary>hidden_size: model width d.</summary>
    public int HiddenSize { get; init; }

    /// <summary>intermediate_size: hidden size of each expert's SwiGLU (ff).</summary>
    public int IntermediateSize { get; init; }

    /// <summary>num_hidden_layers: number of decoder blocks.</summary>
    public int NumHiddenLayers { get; init; }

    /// <summary>num_attention_heads: query heads.</summary>
    public int NumAttentionHeads { get; init; }

    /// <summary>num_key_value_heads: key/value heads (grouped-query attention).</summary>
    public int NumKeyValueHeads { get; init; }

    /// <summary>num_local_experts: experts per MoE layer (E).</summary>
    public int NumLocalExperts { get; init; }

    /// <summary>num_experts_per_tok: experts each token is routed to (k).</summary>
    public int NumExpertsPerTok { get; init; }

    /// <summary>rms_norm_eps (default 1e-5).</summary>
    public double RmsNormEps { get; init; } = 1e-5;

    /// <summary>rope_theta: RoPE base (default 1e6, Mixtral's).</summary>
    public double RopeTheta { get; init; } = 1e6;

    /// <summary>tie_word_embeddings: whether lm_head shares the embedding matrix (default false).</summary>
    public bool TieWordEmbeddings { get; init; }

    /// <summary>max_position_embeddings (default 32768).</summary>
    public int MaxPositionEmbeddings { get; init; } = 32768;

    /// <summary>initializer_range: std of the normal weight init (default 0.02).</summary>
    public double InitializerRange { get; init; } = 0.02;

    /// <summary>
    /// The "router" object of config.json as raw JSON (PureMoE's extension: which router and its options), or null
    /// for Mixtral's own softmax-top-k routing. The engine keeps it opaque; PureMoE.Moe reads it.
    /// </summary>
    public string? RouterJson { get; init; }

    /// <summary>Size of one attention head: hidden_size / num_attention_heads.</summary>
    public int HeadDim => HiddenSize / NumAttentionHeads;

    /// <summary>
    /// Checks the values are consistent; throws <see cref="InvalidDataException"/> naming <paramref name="source"/>
    /// and the offending key.
    /// </summary>
    public void Validate(string source = "config")
    {
        void Positive(string key, double value)
        {
            if (!(value > 0)) throw new InvalidDataException($"{source}: '{key}' must be positive, got {value.ToString(CultureInfo.InvariantCulture)}");
        }
        Positive("vocab_size", VocabSize);
        Positive("hidden_size", HiddenSize);
        Positive("intermediate_size", IntermediateSize);
        Positive("num_hidden_layers", NumHiddenLayers);
        Positive("num_attention_heads", NumAttentionHeads);
        Positive("num_key_value_heads", NumKeyValueHeads);
        Positive("num_local_experts", NumLocalExperts);
        Positive("num_experts_per_tok", NumExpertsPerTok);
        Positive("rms_norm_eps", RmsNormEps);
        Positive("rope_theta", RopeTheta);
        Positive("max_position_embeddings", MaxPositionEmbeddings);
        if (HiddenSize % NumAttentionHeads != 0)
            throw new InvalidDataException($"{source}: 'hidden_size' {HiddenSize} is not divisible by 'num_attention_heads' {NumAttentionHeads}");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            throw new InvalidDataException($"{source}: 'num_attention_heads' {NumAttentionHeads} is not divisible by 'num_key_value_heads' {NumKeyValueHeads}");
        if (HeadDim % 2 != 0)
            throw new InvalidDataException($"{source}: head dimension hidden_size / num_attention_heads = {HeadDim} must be even for rotary embeddings");
        if (NumExpertsPerTok > NumLocalExperts)
            throw new InvalidDataException($"{source}: 'num_experts_per_tok' {NumExpertsPerTok} exceeds 'num_local_experts' {NumLocalExperts}");
    }

    /// <summary>Reads and validates a config.json file.</summary>
    public static MixtralConfig Load(string path) => FromJson(File.ReadAllText(path), path);

    /// <summary>Writes this config as config.json.</summary>
    public void Save(string path) => File.WriteAllText(path, ToJson());

    /// <summary>
    /// Parses and validates config JSON. <paramref name="source"/> (the file name) prefixes every error.
    /// </summary>
    public static MixtralConfig FromJson(string json, string source = "config.json")
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(json) as JsonObject
                ?? throw new InvalidDataException($"{source}: the top level must be a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: invalid JSON: {e.Message}", e);
        }

        if (root["model_type"] is JsonNode mt && ReadString(mt, source, "model_type") != "mixtral")
            throw new InvalidDataException($"{source}: 'model_type' must be \"mixtral\", got \"{mt}\"");

        var config = new MixtralConfig
        {
            VocabSize = RequiredInt(root, source, "vocab_size"),
            HiddenSize = RequiredInt(root, source, "hidden_size"),
            IntermediateSize = RequiredInt(root, source, "intermediate_size"),
            NumHiddenLayers = RequiredInt(root, source, "num_hidden_layers"),
            NumAttentionHeads = RequiredInt(root, source, "num_attention_heads"),
            NumKeyValueHeads = RequiredInt(root, source, "num_key_value_heads"),
            NumLocalExperts = RequiredInt(root, source, "num_local_experts"),
            NumExpertsPerTok = RequiredInt(root, source, "num_experts_per_tok"),
            RmsNormEps = OptionalDouble(root, source, "rms_norm_eps", 1e-5),
            RopeTheta = OptionalDouble(root, source, "rope_theta", 1e6),
            TieWordEmbeddings = OptionalBool(root, source, "tie_word_embeddings", false),
            MaxPositionEmbeddings = (int)OptionalDouble(root, source, "max_position_embeddings", 32768, integer: true),
            InitializerRange = OptionalDouble(root, source, "initializer_range", 0.02),
            RouterJson = root["router"] is JsonNode router
                ? (router is JsonObject ? router.ToJsonString() : throw new InvalidDataException($"{source}: 'router' must be an object, got {router.ToJsonString()}"))
                : null,
        };
        config.Validate(source);
        return config;
    }

    /// <summary>The config as Hugging Face config.json text (with architectures and model_type).</summary>
    public string ToJson()
    {
        var root = new JsonObject
        {
            ["architectures"] = new JsonArray("MixtralForCausalLM"),
            ["model_type"] = "mixtral",
            ["vocab_size"] = VocabSize,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_key_value_heads"] = NumKeyValueHeads,
            ["num_local_experts"] = NumLocalExperts,
            ["num_experts_per_tok"] = NumExpertsPerTok,
            ["rms_norm_eps"] = RmsNormEps,
            ["rope_theta"] = RopeTheta,
            ["tie_word_embeddings"] = TieWordEmbeddings,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["initializer_range"] = InitializerRange,
            ["hidden_act"] = "silu",
        };
        if (RouterJson is not null) root["router"] = JsonNode.Parse(RouterJson);
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    // ---------------------------------------------------------------- typed reads with errors naming the key

    private static int RequiredInt(JsonObject root, string source, string key)
    {
        if (root[key] is not JsonNode node)
            throw new InvalidDataException($"{source}: missing required key '{key}'");
        return (int)ReadNumber(node, source, key, integer: true);
    }

    private static double OptionalDouble(JsonObject root, string source, string key, double fallback, bool integer = false) =>
        root[key] is JsonNode node ? ReadNumber(node, source, key, integer) : fallback;

    private static bool OptionalBool(JsonObject root, string source, string key, bool fallback)
    {
        if (root[key] is not JsonNode node) return fallback;
        if (node.GetValueKind() is JsonValueKind.True or JsonValueKind.False) return node.GetValue<bool>();
        throw new InvalidDataException($"{source}: '{key}' must be true or false, got {node.ToJsonString()}");
    }

    private static double ReadNumber(JsonNode node, string source, string key, bool integer)
    {
        if (node.GetValueKind() != JsonValueKind.Number)
            throw new InvalidDataException($"{source}: '{key}' must be a number, got {node.ToJsonString()}");
        double value = node.GetValue<double>();
        if (integer && (value != Math.Floor(value) || value > int.MaxValue || value < int.MinValue))
            throw new InvalidDataException($"{source}: '{key}' must be an integer, got {node.ToJsonString()}");
        return value;
    }

    private static string ReadString(JsonNode node, string source, string key) =>
        node.GetValueKind() == JsonValueKind.String ? node.GetValue<string>()
            : throw new InvalidDataException($"{source}: '{key}' must be a string, got {node.ToJsonString()}");
}
