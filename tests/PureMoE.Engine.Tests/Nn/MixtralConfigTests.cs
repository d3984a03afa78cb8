using PureMoE.Models;

namespace PureMoE.Engine.Tests.Nn;

public class MixtralConfigTests
{
    // The shape of a real Hugging Face Mixtral config.json (8x7B), including keys the engine ignores.
    private const string RealConfig = """
    {
      "architectures": ["MixtralForCausalLM"],
      "attention_dropout": 0.0,
      "bos_token_id": 1,
      "eos_token_id": 2,
      "hidden_act": "silu",
      "hidden_size": 4096,
      "initializer_range": 0.02,
      "intermediate_size": 14336,
      "max_position_embeddings": 32768,
      "model_type": "mixtral",
      "num_attention_heads": 32,
      "num_experts_per_tok": 2,
      "num_hidden_layers": 32,
      "num_key_value_heads": 8,
      "num_local_experts": 8,
      "output_router_logits": false,
      "rms_norm_eps": 1e-05,
      "rope_theta": 1000000.0,
      "router_aux_loss_coef": 0.02,
      "sliding_window": null,
      "tie_word_embeddings": false,
      "torch_dtype": "bfloat16",
      "transformers_version": "4.36.0.dev0",
      "use_cache": true,
      "vocab_size": 32000
    }
    """;

    [Fact]
    public void ReadsRealConfigIgnoringUnknownKeys()
    {
        var c = MixtralConfig.FromJson(RealConfig);
        Assert.Equal(32000, c.VocabSize);
        Assert.Equal(4096, c.HiddenSize);
        Assert.Equal(14336, c.IntermediateSize);
        Assert.Equal(32, c.NumHiddenLayers);
        Assert.Equal(32, c.NumAttentionHeads);
        Assert.Equal(8, c.NumKeyValueHeads);
        Assert.Equal(8, c.NumLocalExperts);
        Assert.Equal(2, c.NumExpertsPerTok);
        Assert.Equal(1e-5, c.RmsNormEps);
        Assert.Equal(1e6, c.RopeTheta);
        Assert.False(c.TieWordEmbeddings);
        Assert.Equal(32768, c.MaxPositionEmbeddings);
        Assert.Equal(128, c.HeadDim);
    }

    [Fact]
    public void JsonRoundTripThroughFile()
    {
        var c = TinyConfigs.Mixtral() with { TieWordEmbeddings = true, RmsNormEps = 1e-6 };
        string path = Path.Combine(Path.GetTempPath(), $"puremoe-config-{Guid.NewGuid():N}.json");
        try
        {
            c.Save(path);
            Assert.Equal(c, MixtralConfig.Load(path));
            string text = File.ReadAllText(path);
            Assert.Contains("\"architectures\": [\n    \"MixtralForCausalLM\"", text.ReplaceLineEndings("\n"));
            Assert.Contains("\"model_type\": \"mixtral\"", text);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void DefaultsApplyToOptionalKeys()
    {
        var c = MixtralConfig.FromJson("""
            {"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 1, "num_local_experts": 2, "num_experts_per_tok": 1}
            """);
        Assert.Equal(1e-5, c.RmsNormEps);
        Assert.Equal(1e6, c.RopeTheta);
        Assert.False(c.TieWordEmbeddings);
    }

    private static string With(string key, string value)
    {
        var json = System.Text.Json.Nodes.JsonNode.Parse(RealConfig)!.AsObject();
        if (value == "REMOVE") json.Remove(key);
        else json[key] = System.Text.Json.Nodes.JsonNode.Parse(value);
        return json.ToJsonString();
    }

    [Theory]
    [InlineData("vocab_size", "REMOVE", "my/config.json: missing required key 'vocab_size'")]
    [InlineData("num_key_value_heads", "REMOVE", "my/config.json: missing required key 'num_key_value_heads'")]
    [InlineData("hidden_size", "4100", "my/config.json: 'hidden_size' 4100 is not divisible by 'num_attention_heads' 32")]
    [InlineData("num_key_value_heads", "5", "my/config.json: 'num_attention_heads' 32 is not divisible by 'num_key_value_heads' 5")]
    [InlineData("num_experts_per_tok", "9", "my/config.json: 'num_experts_per_tok' 9 exceeds 'num_local_experts' 8")]
    [InlineData("num_local_experts", "0", "my/config.json: 'num_local_experts' must be positive, got 0")]
    [InlineData("rms_norm_eps", "-1", "my/config.json: 'rms_norm_eps' must be positive, got -1")]
    [InlineData("hidden_size", "\"4096\"", "my/config.json: 'hidden_size' must be a number, got \"4096\"")]
    [InlineData("num_hidden_layers", "2.5", "my/config.json: 'num_hidden_layers' must be an integer, got 2.5")]
    [InlineData("tie_word_embeddings", "1", "my/config.json: 'tie_word_embeddings' must be true or false, got 1")]
    [InlineData("model_type", "\"llama\"", "my/config.json: 'model_type' must be \"mixtral\", got \"llama\"")]
    public void ValidationErrorsNameFileAndKey(string key, string value, string message)
    {
        var ex = Assert.Throws<InvalidDataException>(() => MixtralConfig.FromJson(With(key, value), "my/config.json"));
        Assert.Equal(message, ex.Message);
    }

    [Fact]
    public void OddHeadDimensionIsRejected()
    {
        var ex = Assert.Throws<InvalidDataException>(() => MixtralConfig.FromJson(With("hidden_size", "96"), "c.json"));
        Assert.Contains("head dimension", ex.Message);
    }

    [Fact]
    public void InvalidJsonIsReported()
    {
        var ex = Assert.Throws<InvalidDataException>(() => MixtralConfig.FromJson("{ not json", "x.json"));
        Assert.StartsWith("x.json: invalid JSON", ex.Message);
    }
}
