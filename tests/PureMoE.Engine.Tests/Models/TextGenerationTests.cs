using PureMoE.Models;

namespace PureMoE.Engine.Tests.Models;

public sealed class TextGenerationTests
{
    [Fact]
    public void EncodeDecodeRoundTripsUtf8()
    {
        const string text = "MoE ≈ 2·k experts, ü";
        var ids = TextGeneration.Encode(text);
        Assert.Equal(1, ids.Size(0));
        Assert.Equal(System.Text.Encoding.UTF8.GetByteCount(text), ids.Size(1));
        Assert.Equal(text, TextGeneration.Decode(ids.ToLongArray()));
        Assert.Equal("a\uFFFDb", TextGeneration.Decode([97, 300, 98]));
    }

    [Fact]
    public void GenerateGreedyMatchesTheModelsGenerateAndIsDeterministic()
    {
        var config = new MixtralConfig
        {
            VocabSize = 256, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 1, NumAttentionHeads = 2,
            NumKeyValueHeads = 1, NumLocalExperts = 4, NumExpertsPerTok = 2, MaxPositionEmbeddings = 64,
        };
        var model = new MixtralForCausalLM(config, new Rng(3));
        string a = TextGeneration.Generate(model, "ab", maxNewTokens: 5);
        string b = TextGeneration.Generate(model, "ab", maxNewTokens: 5);
        Assert.Equal(a, b);
        var ids = model.Generate(TextGeneration.Encode("ab"), 5, 0, 1, new Rng(0)).ToLongArray();
        Assert.Equal(TextGeneration.Decode(ids.Skip(2)), a);
        Assert.Throws<ArgumentException>(() => TextGeneration.Generate(model, "", 1));
    }
}
