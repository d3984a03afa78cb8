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

    [Theory]
    [InlineData(0.0, 1.0)]
    [InlineData(1.3, 0.9)]
    public void GenerateTokensYieldsWhatGenerateReturnsOneAtATime(double temperature, double topP)
    {
        var config = new MixtralConfig
        {
            VocabSize = 256, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 2, NumAttentionHeads = 2,
            NumKeyValueHeads = 1, NumLocalExperts = 4, NumExpertsPerTok = 2, MaxPositionEmbeddings = 64,
        };
        var model = new MixtralForCausalLM(config, new Rng(3));
        var prompt = TextGeneration.Encode("the cat");
        long[] whole = model.Generate(prompt, 20, temperature, topP, new Rng(9)).ToLongArray()[7..];
        Assert.Equal(whole, model.GenerateTokens(prompt, 20, temperature, topP, new Rng(9)).ToArray());
        // Lazy: taking three computes three (the next draws of the same Rng continue where they stopped).
        var rng = new Rng(9);
        Assert.Equal(whole[..3], model.GenerateTokens(prompt, 20, temperature, topP, rng).Take(3).ToArray());
        Assert.Throws<ArgumentException>(() => model.GenerateTokens(Tensor.FromArray(new long[] { 97, 98, 97, 98 }, 2, 2), 1, 0, 1, new Rng(0)));
    }
}
