using PureMoE.Models;
using PureMoE.Nn;

namespace PureMoE.Engine.Tests.Nn;

public class ModuleTests
{
    private static List<string> HuggingFaceNames(int layers, int experts)
    {
        var names = new List<string> { "model.embed_tokens.weight" };
        for (int i = 0; i < layers; i++)
        {
            string l = $"model.layers.{i}.";
            names.AddRange(new[] { "q", "k", "v", "o" }.Select(p => $"{l}self_attn.{p}_proj.weight"));
            names.Add($"{l}block_sparse_moe.gate.weight");
            for (int j = 0; j < experts; j++)
                names.AddRange(new[] { "w1", "w2", "w3" }.Select(w => $"{l}block_sparse_moe.experts.{j}.{w}.weight"));
            names.Add($"{l}input_layernorm.weight");
            names.Add($"{l}post_attention_layernorm.weight");
        }
        names.Add("model.norm.weight");
        names.Add("lm_head.weight");
        return names;
    }

    [Fact]
    public void MixtralParameterNamesAndShapesMatchHuggingFace()
    {
        var config = TinyConfigs.Mixtral(layers: 2, experts: 4);
        var model = new MixtralForCausalLM(config, new Rng(1));
        var named = model.NamedParameters().ToList();
        Assert.Equal(HuggingFaceNames(2, 4), named.Select(p => p.Name).ToList());

        var shapes = named.ToDictionary(p => p.Name, p => p.Parameter.Shape);
        Assert.Equal(new Shape(32, 32), shapes["model.embed_tokens.weight"]);
        Assert.Equal(new Shape(16, 32), shapes["model.layers.1.self_attn.k_proj.weight"]);   // 2 kv heads × head_dim 8
        Assert.Equal(new Shape(4, 32), shapes["model.layers.0.block_sparse_moe.gate.weight"]);
        Assert.Equal(new Shape(64, 32), shapes["model.layers.0.block_sparse_moe.experts.3.w1.weight"]);
        Assert.Equal(new Shape(32, 64), shapes["model.layers.0.block_sparse_moe.experts.3.w2.weight"]);
        Assert.Equal(new Shape(64, 32), shapes["model.layers.0.block_sparse_moe.experts.3.w3.weight"]);
        Assert.Equal(new Shape(32, 32), shapes["lm_head.weight"]);
        foreach (var (name, p) in named)
        {
            Assert.True(p.IsLeaf && p.RequiresGrad);
            Assert.Equal(name, p.Name);
        }
        Assert.Equal(named.Sum(p => (long)p.Parameter.Numel), model.ParameterCount);
        Assert.All(model.Model.Norm.Weight.ToFloatArray(), w => Assert.Equal(1f, w));
    }

    [Fact]
    public void TiedEmbeddingsHaveNoLmHeadParameter()
    {
        var model = new MixtralForCausalLM(TinyConfigs.Mixtral(layers: 1) with { TieWordEmbeddings = true }, new Rng(1));
        Assert.DoesNotContain("lm_head.weight", model.StateDict().Keys);
        Assert.Equal(new Shape(1, 3, 32), model.Forward(TinyConfigs.Ids([1, 2, 3], 1)).Shape);
    }

    [Fact]
    public void StateDictRoundTripCopiesValuesInPlace()
    {
        var config = TinyConfigs.Mixtral(layers: 1, experts: 2, topK: 1);
        var a = new MixtralForCausalLM(config, new Rng(1));
        var b = new MixtralForCausalLM(config, new Rng(2));
        var before = b.Parameters().ToList();
        b.LoadStateDict(a.StateDict());
        // Same tensor objects (in place), now with a's values.
        Assert.Equal(before, b.Parameters().ToList());
        foreach (var ((name, pa), (_, pb)) in a.NamedParameters().Zip(b.NamedParameters()))
            Assert.True(pa.ToFloatArray().SequenceEqual(pb.ToFloatArray()), name);
        var ids = TinyConfigs.Ids([1, 5, 9, 3], 1);
        Assert.Equal(a.Forward(ids).ToFloatArray(), b.Forward(ids).ToFloatArray());
    }

    [Fact]
    public void StrictLoadReportsEveryProblemAndModifiesNothing()
    {
        var config = TinyConfigs.Mixtral(layers: 1, experts: 2, topK: 1);
        var model = new MixtralForCausalLM(config, new Rng(1));
        var original = model.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.ToFloatArray());

        var dict = new Dictionary<string, Tensor>();
        foreach (var (name, p) in model.NamedParameters()) dict[name] = Tensor.ZerosLike(p);   // zeros would overwrite
        dict.Remove("model.norm.weight");                                                      // missing
        dict["model.layers.0.extra.weight"] = Tensor.Zeros(new Shape(3));                      // unexpected
        dict["lm_head.weight"] = Tensor.Zeros(new Shape(31, 32));                               // wrong shape

        var ex = Assert.Throws<ArgumentException>(() => model.LoadStateDict(dict));
        Assert.Contains("missing keys: model.norm.weight", ex.Message);
        Assert.Contains("unexpected keys: model.layers.0.extra.weight", ex.Message);
        Assert.Contains("lm_head.weight: checkpoint [31,32], model [32,32]", ex.Message);
        foreach (var (name, p) in model.NamedParameters())
            Assert.True(original[name].SequenceEqual(p.ToFloatArray()), $"{name} was modified");

        // Non-strict tolerates missing/unexpected keys but never a shape mismatch.
        var ex2 = Assert.Throws<ArgumentException>(() => model.LoadStateDict(dict, strict: false));
        Assert.DoesNotContain("missing", ex2.Message);
        dict["lm_head.weight"] = Tensor.Zeros(new Shape(32, 32));
        model.LoadStateDict(dict, strict: false);
        Assert.All(model.LmHead!.Weight.ToFloatArray(), w => Assert.Equal(0f, w));
        Assert.True(original["model.norm.weight"].SequenceEqual(model.Model.Norm.Weight.ToFloatArray()));
    }

    [Fact]
    public void LinearMatchesManualMatMul()
    {
        var rng = new Rng(3);
        var linear = new Linear(5, 3, rng);
        var x = Tensor.Randn(new Shape(2, 4, 5), rng);
        var y = linear.Forward(x).ToFloatArray();
        float[] w = linear.Weight.ToFloatArray(), b = linear.Bias!.ToFloatArray(), xs = x.ToFloatArray();
        for (int r = 0; r < 8; r++)
            for (int o = 0; o < 3; o++)
            {
                double sum = b[o];
                for (int i = 0; i < 5; i++) sum += xs[r * 5 + i] * w[o * 5 + i];
                Assert.Equal(sum, y[r * 3 + o], 5);
            }
        // Default init is PyTorch's Uniform(±1/√in).
        Assert.All(w, v => Assert.InRange(v, -1 / Math.Sqrt(5), 1 / Math.Sqrt(5)));
        Assert.Equal(new[] { "weight", "bias" }, linear.NamedParameters().Select(p => p.Name));
    }

    [Fact]
    public void SameSeedGivesSameWeights()
    {
        var config = TinyConfigs.Mixtral(layers: 1);
        var a = new MixtralForCausalLM(config, new Rng(7)).Parameters().Select(p => p.ToFloatArray()).ToList();
        var b = new MixtralForCausalLM(config, new Rng(7)).Parameters().Select(p => p.ToFloatArray()).ToList();
        Assert.Equal(a, b);
    }

    [Fact]
    public void ConvertingToFloat64AndReferenceDeviceReplacesParameters()
    {
        var config = TinyConfigs.Mixtral(layers: 1, experts: 2, topK: 1);
        var model = new MixtralForCausalLM(config, new Rng(1));
        var ids = TinyConfigs.Ids([1, 2, 3, 4], 1);
        var logits32 = model.Forward(ids).ToDoubleArray();
        model.To(DType.Float64).To(Device.CpuReference);
        foreach (var (name, p) in model.NamedParameters())
        {
            Assert.Equal(DType.Float64, p.DType);
            Assert.Equal(Device.CpuReference, p.Device);
            Assert.True(p.IsLeaf && p.RequiresGrad);
            Assert.Equal(name, p.Name);
        }
        var logits64 = model.Forward(ids.To(Device.CpuReference));
        Assert.Equal(DType.Float64, logits64.DType);
        Assert.True(TinyConfigs.MaxAbsDiff(logits32, logits64.ToDoubleArray()) < 1e-4);
    }

    [Fact]
    public void TrainEvalAndZeroGrad()
    {
        var model = new MixtralForCausalLM(TinyConfigs.Mixtral(layers: 1), new Rng(1));
        model.Eval();
        Assert.False(model.Model.Layers[0].SelfAttn.IsTraining);
        model.Train();
        Assert.True(model.Model.Layers[0].SelfAttn.IsTraining);
        model.Loss(TinyConfigs.Ids([1, 2, 3, 4], 1)).Backward();
        Assert.NotNull(model.Model.EmbedTokens.Weight.Grad);
        model.ZeroGrad();
        Assert.All(model.Parameters(), p => Assert.Null(p.Grad));
    }

    [Fact]
    public void RandomInitSkipDrawsNothingAndNests()
    {
        var rng = new Rng(3);
        Tensor skipped;
        using (RandomInit.Skip())
        {
            using (RandomInit.Skip()) Assert.True(RandomInit.IsSkipped);
            Assert.True(RandomInit.IsSkipped);   // the inner scope's end leaves the outer one open
            skipped = new Linear(4, 3, rng, initStd: 0.02).Weight;   // Normal
            var uniform = Tensor.Uniform(new Shape(2), rng);
            Assert.Equal(new Shape(3, 4), skipped.Shape);
            Assert.Equal(new Shape(2), uniform.Shape);
        }
        Assert.False(RandomInit.IsSkipped);
        // Nothing was drawn: the generator continues exactly as a fresh one with the same seed.
        Assert.Equal(new Rng(3).NextUInt64(), rng.NextUInt64());
        // Outside the scope weights are drawn again, the same as without any scope.
        Assert.Equal(new Linear(4, 3, new Rng(5), initStd: 0.02).Weight.ToArray<float>(),
            new Linear(4, 3, new Rng(5), initStd: 0.02).Weight.ToArray<float>());
        Assert.DoesNotContain(new Linear(4, 3, new Rng(5), initStd: 0.02).Weight.ToArray<float>(), float.IsNaN);
    }
}
