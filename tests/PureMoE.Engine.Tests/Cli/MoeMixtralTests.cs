using PureMoE.Cli;
using PureMoE.Models;
using PureMoE.Moe;
using PureMoE.Moe.Models;
using PureMoE.Moe.Routing;

namespace PureMoE.Engine.Tests.Cli;

/// <summary>Mixtral models with MoeLayer and a configured router: creation, checkpoints with router state, training.</summary>
public sealed class MoeMixtralTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("puremoe-moemix").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static MixtralConfig Config(RouterSpec spec) => EvalCommandTests.SmallConfig() with { RouterJson = spec.ToJson() };

    [Fact]
    public void MixtralDefaultEqualsThePlainSparseMoeBlockModel()
    {
        // Same seed, same parameter order: MoeLayer (sorted, grouped GEMMs) and the plain per-expert loop agree.
        var config = EvalCommandTests.SmallConfig();
        var plain = new MixtralForCausalLM(config, new Rng(8), DType.Float64);
        var moe = MoeMixtral.Create(config, new Rng(8), DType.Float64);
        Assert.Equal(plain.NamedParameters().Select(p => p.Name), moe.NamedParameters().Select(p => p.Name));
        var ids = Tensor.FromArray(Enumerable.Range(0, 14).Select(i => (long)(i * 7 % 50)).ToArray(), 2, 7);
        double[] a = plain.Forward(ids).ToDoubleArray(), b = moe.Forward(ids).ToDoubleArray();
        for (int i = 0; i < a.Length; i++) Assert.Equal(a[i], b[i], 1e-10);
    }

    [Fact]
    public void ReluLambdaSurvivesSaveAndLoad()
    {
        var model = MoeMixtral.Create(Config(RouterSpec.Create("relu")), new Rng(1));
        var routers = MoeMixtral.Layers(model).Select(l => (ReluRouter)l.Router).ToArray();
        var ids = Tensor.FromArray(Enumerable.Range(0, 16).Select(i => (long)(i % 50)).ToArray(), 2, 8);
        for (int step = 0; step < 3; step++)
        {
            model.Forward(ids);
            MoeMixtral.AfterOptimizerStep(model);
        }
        double lambda = routers[0].Lambda.Value;
        Assert.NotEqual(1e-8, lambda, 1e-12);
        Assert.Same(routers[0].Lambda, routers[1].Lambda);                       // one global λ by default
        string dir = Path.Combine(_dir, "relu");
        MoeMixtral.Save(model, dir);
        var loaded = MoeMixtral.Load(dir);
        var loadedRouter = (ReluRouter)MoeMixtral.Layers(loaded)[0].Router;
        Assert.Equal(lambda, loadedRouter.Lambda.Value);
        Assert.Equal("relu", MoeMixtral.SpecOf(loaded.Config).Name);
    }

    [Fact]
    public void C2RListsSurviveSaveAndLoad()
    {
        var topk = MoeMixtral.Create(EvalCommandTests.SmallConfig(), new Rng(2));
        var ids = Tensor.FromArray(Enumerable.Range(0, 32).Select(i => (long)(i * 3 % 50)).ToArray(), 4, 8);
        var profiles = MoeMixtral.Profile(topk, [ids]);
        var spec = RouterSpec.Create("c2r", new Dictionary<string, string> { ["candidates"] = "1" });
        var c2r = MoeMixtral.Create(Config(spec), new Rng(2), profiles: profiles);
        string dir = Path.Combine(_dir, "c2r");
        MoeMixtral.Save(c2r, dir);
        var loaded = MoeMixtral.Load(dir);
        for (int layer = 0; layer < 2; layer++)
        {
            var a = (C2RRouter)MoeMixtral.Layers(c2r)[layer].Router;
            var b = (C2RRouter)MoeMixtral.Layers(loaded)[layer].Router;
            for (int e = 0; e < 4; e++) Assert.Equal(a.CandidateList(e), b.CandidateList(e));
        }
        Assert.Equal(c2r.Forward(ids).ToArray<float>(), loaded.Forward(ids).ToArray<float>());
    }

    [Theory]
    [InlineData("rectify", "k=1,capacity_factor=1.0,aux_loss=0.01")]
    [InlineData("relu", "k=1")]
    [InlineData("topk", "k=1,capacity_factor=1.0,aux_loss=0.01")]
    public void TrainRunsWithEachRouterAndTheLossFalls(string router, string options)
    {
        var opts = options.Split(',').Select(o => o.Split('=')).ToDictionary(p => p[0], p => p[1]);
        var result = TrainCommand.Run(new TrainOptions
        {
            Steps = 30, Batch = 4, Seq = 32, Hidden = 32, FeedForward = 64, Layers = 1, Experts = 4, TopK = 1,
            Warmup = 5, EvalEvery = 1000, Router = RouterSpec.Create(router, opts),
        }, TextWriter.Null, TestContext.Current.CancellationToken);
        Assert.True(result.ValidLosses[^1].Loss < result.ValidLosses[0].Loss - 0.5,
            $"{router}: validation loss {result.ValidLosses[0].Loss:F3} -> {result.ValidLosses[^1].Loss:F3}");
    }

    [Fact]
    public void TrainC2RContinuesFromAProfiledTopKModel()
    {
        string topkDir = Path.Combine(_dir, "topk2");
        var small = new TrainOptions { Steps = 10, Batch = 4, Seq = 32, Hidden = 32, FeedForward = 64, Layers = 1, Experts = 4, TopK = 2, Warmup = 2, EvalEvery = 1000 };
        TrainCommand.Run(small with { OutDir = topkDir }, TextWriter.Null, TestContext.Current.CancellationToken);
        var log = new StringWriter();
        var result = TrainCommand.Run(small with
        {
            FromDir = topkDir,
            Router = RouterSpec.Create("c2r", new Dictionary<string, string> { ["candidates"] = "1" }),
        }, log, TestContext.Current.CancellationToken);
        Assert.Contains("c2r: profiled", log.ToString());
        Assert.IsType<C2RRouter>(MoeMixtral.Layers(result.Model)[0].Router);
    }

    [Theory]
    [InlineData("topk", 2)]
    [InlineData("topk", 4)]
    [InlineData("relu", 2)]
    public void ExpertParallelModelEqualsTheSingleDeviceModel(string router, int devices)
    {
        // Dropless routers decide per token, so splitting the tokens over ranks changes nothing: outputs, the
        // language-model loss and every parameter's gradient must agree. (Regularisers are computed per rank on
        // its own tokens, as in the papers' expert-parallel training, so they are not additive across ranks.)
        var config = Config(RouterSpec.Create(router));
        var single = MoeMixtral.Create(config, new Rng(21), DType.Float64);
        var parallel = MoeMixtral.Create(config, new Rng(21), DType.Float64, devices: devices);
        Assert.Equal(single.NamedParameters().Select(p => p.Name), parallel.NamedParameters().Select(p => p.Name));
        var ids = Tensor.FromArray(Enumerable.Range(0, 32).Select(i => (long)(i * 11 % 50)).ToArray(), 4, 8);
        var a = single.Loss(ids);
        var b = parallel.Loss(ids);
        Assert.Equal(a.Item(), b.Item(), 1e-10);
        a.Backward();
        b.Backward();
        var gb = parallel.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Grad!.ToDoubleArray());
        foreach (var (name, p) in single.NamedParameters())
        {
            double[] x = p.Grad!.ToDoubleArray(), y = gb[name];
            double scale = Math.Max(x.Max(Math.Abs), 1e-12);
            for (int i = 0; i < x.Length; i++) Assert.True(Math.Abs(x[i] - y[i]) <= 1e-9 * scale, $"{name}[{i}]: {x[i]} vs {y[i]}");
        }
        Assert.True(MoeMixtral.LastDispatchBytes(parallel) > 0);
        if (router == "relu")
        {
            // The per-rank sparsity losses reach the wrapped gate through the block's backward.
            parallel.ZeroGrad();
            parallel.Loss(ids);
            parallel.RegularizationLoss()!.Backward();
            var gate = parallel.NamedParameters().First(p => p.Name.EndsWith("block_sparse_moe.gate.weight")).Parameter;
            Assert.Contains(gate.Grad!.ToDoubleArray(), v => v != 0);
        }
        Assert.Equal(32, MoeMixtral.LastStats(parallel)[0]!.Tokens);
    }
}
