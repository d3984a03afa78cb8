using PureMoE.IO;
using PureMoE.Models;
using PureMoE.Engine.Tests.Cli;

namespace PureMoE.Engine.Tests.Models;

public sealed class MixtralCheckpointTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("puremoe-ckpt").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static MixtralForCausalLM NewModel(ulong seed) => new(EvalCommandTests.SmallConfig(), new Rng(seed));

    private static void AssertSameWeights(MixtralForCausalLM a, MixtralForCausalLM b)
    {
        var sb = b.StateDict();
        foreach (var (name, t) in a.StateDict()) Assert.Equal(t.ToArray<float>(), sb[name].ToArray<float>());
    }

    [Fact]
    public void SaveThenLoadGivesTheSameWeightsAndHfNames()
    {
        var model = NewModel(1);
        string dir = Path.Combine(_dir, "m");
        MixtralCheckpoint.Save(model, dir);
        Assert.True(File.Exists(Path.Combine(dir, "config.json")));
        using (var f = SafetensorsFile.Open(Path.Combine(dir, "model.safetensors")))
        {
            Assert.Contains("model.layers.1.block_sparse_moe.experts.3.w1.weight", f.Names);
            Assert.Contains("model.embed_tokens.weight", f.Names);
            Assert.Contains("lm_head.weight", f.Names);
        }
        AssertSameWeights(model, MixtralCheckpoint.Load(dir));
    }

    [Fact]
    public void ShardedCheckpointWithIndexLoads()
    {
        var model = NewModel(2);
        string dir = Path.Combine(_dir, "sharded");
        Directory.CreateDirectory(dir);
        model.Config.Save(Path.Combine(dir, "config.json"));
        var state = model.StateDict().ToList();
        var first = state.Take(state.Count / 2).ToList();
        var second = state.Skip(state.Count / 2).ToList();
        TensorIO.Save(Path.Combine(dir, "model-00001-of-00002.safetensors"), first);
        TensorIO.Save(Path.Combine(dir, "model-00002-of-00002.safetensors"), second);
        var map = first.Select(kv => $"\"{kv.Key}\": \"model-00001-of-00002.safetensors\"")
            .Concat(second.Select(kv => $"\"{kv.Key}\": \"model-00002-of-00002.safetensors\""));
        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), "{\"metadata\": {}, \"weight_map\": {" + string.Join(",", map) + "}}");
        AssertSameWeights(model, MixtralCheckpoint.Load(dir));

        // A tensor in two shards is an error naming it and both files, not a silent choice of one.
        TensorIO.Save(Path.Combine(dir, "model-00002-of-00002.safetensors"), second.Append(first[0]));
        var ex = Assert.Throws<InvalidDataException>(() => MixtralCheckpoint.Load(dir));
        Assert.Contains(first[0].Key, ex.Message);
        Assert.Contains("model-00001-of-00002.safetensors", ex.Message);
        Assert.Contains("model-00002-of-00002.safetensors", ex.Message);
    }

    [Fact]
    public void MissingConfigNamesTheFile()
    {
        string dir = Path.Combine(_dir, "noconfig");
        Directory.CreateDirectory(dir);
        var ex = Assert.Throws<FileNotFoundException>(() => MixtralCheckpoint.Load(dir));
        Assert.Contains("config.json", ex.Message);
    }

    [Fact]
    public void WeightsThatDoNotFitTheConfigAreAClearError()
    {
        var model = NewModel(3);
        string dir = Path.Combine(_dir, "mismatch");
        MixtralCheckpoint.Save(model, dir);
        // Same weights, a config that claims more experts.
        (EvalCommandTests.SmallConfig() with { NumLocalExperts = 5 }).Save(Path.Combine(dir, "config.json"));
        var ex = Assert.Throws<InvalidDataException>(() => MixtralCheckpoint.Load(dir));
        Assert.Contains("experts.4", ex.Message);
    }

    [Fact]
    public void FailedSaveLeavesThePreviousCheckpointIntact()
    {
        var model = NewModel(4);
        string dir = Path.Combine(_dir, "atomic");
        MixtralCheckpoint.Save(model, dir);
        byte[] before = File.ReadAllBytes(Path.Combine(dir, "model.safetensors"));
        // An extra tensor whose name collides with a parameter makes the writer refuse, mid-save.
        var clash = new Dictionary<string, Tensor> { ["lm_head.weight"] = Tensor.Zeros(new Shape(1)) };
        Assert.ThrowsAny<Exception>(() => MixtralCheckpoint.Save(NewModel(5), dir, clash));
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(dir, "model.safetensors")));
        Assert.Single(Directory.GetDirectories(_dir));   // no temporary directory left behind
        AssertSameWeights(model, MixtralCheckpoint.Load(dir));
    }

    [Fact]
    public void CorruptWeightsFileIsAClearErrorNamingIt()
    {
        string dir = Path.Combine(_dir, "corrupt");
        MixtralCheckpoint.Save(NewModel(6), dir);
        string weights = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(weights);
        File.WriteAllBytes(weights, bytes[..(bytes.Length / 2)]);
        var ex = Assert.Throws<SafetensorsFormatException>(() => MixtralCheckpoint.Load(dir));
        Assert.Contains("model.safetensors", ex.Message);
    }

    [Fact]
    public void LoadBuildsTheModelWithoutDrawingWeightsAndFillsEveryParameter()
    {
        // The tests run with uninitialised memory poisoned (NaN): a parameter the load left unwritten would show.
        var model = NewModel(7);
        string dir = Path.Combine(_dir, "noinit");
        MixtralCheckpoint.Save(model, dir);
        var loaded = MixtralCheckpoint.Load(dir);
        AssertSameWeights(model, loaded);
        Assert.All(loaded.Parameters(), p => Assert.DoesNotContain(p.ToArray<float>(), float.IsNaN));
        Assert.False(PureMoE.Nn.RandomInit.IsSkipped);   // the scope ended with the load
    }

    [Fact]
    public void Float64ModelSavesAsFloat32AndLoadsBackIntoEitherDType()
    {
        var model = new MixtralForCausalLM(EvalCommandTests.SmallConfig(), new Rng(8), DType.Float64);
        string dir = Path.Combine(_dir, "f64");
        MixtralCheckpoint.Save(model, dir);
        using (var f = SafetensorsFile.Open(Path.Combine(dir, "model.safetensors")))
            Assert.All(f.Names, n => Assert.Equal(SafetensorsDType.F32, f.GetInfo(n).DType));
        var as32 = MixtralCheckpoint.Load(dir);
        var as64 = MixtralCheckpoint.Load(dir, DType.Float64);
        var s32 = as32.StateDict();
        var s64 = as64.StateDict();
        foreach (var (name, t) in model.StateDict())
        {
            float[] expected = t.ToFloatArray();
            Assert.Equal(expected, s32[name].ToArray<float>());
            Assert.Equal(DType.Float64, s64[name].DType);
            Assert.Equal(expected.Select(x => (double)x).ToArray(), s64[name].ToArray<double>());
        }
    }
}
