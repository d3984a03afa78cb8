using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using PureMoE.Moe.Routing;
using PureMoE.Testing;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>ReMoE's ReLU router: ROUTERS.md §3 and invariants §6.1, §6.5.</summary>
public class ReluRouterTests
{
    private static RoutingContext Training(int experts) => RoutingContext.SingleDevice(experts, training: true);
    private static RoutingContext Evaluation(int experts) => RoutingContext.SingleDevice(experts, training: false);

    /// <summary>λ·E/(k·T²)·Σ_e (Σ_t relu(l_te))·#{t : l_te &gt; 0}, in float64.</summary>
    private static double SparsityLossByFormula(double[] l, int tokens, int experts, int k, double lambda)
    {
        double sum = 0;
        for (int e = 0; e < experts; e++)
        {
            double mass = 0;
            int count = 0;
            for (int t = 0; t < tokens; t++)
            {
                double v = l[t * experts + e];
                if (v > 0) { mass += v; count++; }
            }
            sum += mass * count;
        }
        return lambda * experts / ((double)k * tokens * tokens) * sum;
    }

    [Property(Arbitrary = [typeof(RouterArbitraries)], MaxTest = 600)]
    public void PlanIsWellFormedAndHoldsExactlyThePositiveLogits(GateLogitsCase c)
    {
        var router = new ReluRouter(c.Experts, new ReluRouterOptions { K = c.K });
        var logits = c.Tensor();
        var plan = router.Route(logits, Training(c.Experts));
        plan.Validate();

        double[] l = logits.ToDoubleArray(), w = plan.Weights.ToDoubleArray();
        Assert.Equal(c.Experts, plan.SlotsPerToken);
        Assert.Null(plan.Capacity);
        int active = 0;
        for (int i = 0; i < l.Length; i++)
        {
            int e = i % c.Experts;
            Assert.Equal(l[i] > 0 ? e : -1, plan.Expert[i]);              // expert set == {e : l_e > 0}
            Assert.Equal(Math.Max(l[i], 0), w[i]);                          // weights = relu(l), nothing renormalised
            if (l[i] > 0) active++;
        }
        double sparsity = c.Tokens == 0 ? 0 : 1.0 - (double)active / l.Length;
        Assert.Equal(sparsity, plan.Extras["sparsity"], 12);
        Assert.Equal(sparsity, ReluRouter.Sparsity(plan), 12);
        Assert.Equal(router.Lambda.Value, plan.Extras["lambda"]);
        Assert.Equal(c.Tokens > 0, plan.SparsityLoss is not null);
        Assert.Null(plan.AuxLoss);
        Assert.Null(plan.ZLoss);
    }

    [Property(Arbitrary = [typeof(RouterArbitraries)], MaxTest = 300)]
    public void EvaluationRoutesTheSameWithoutRegulariserOrLambdaChange(GateLogitsCase c)
    {
        var router = new ReluRouter(c.Experts, new ReluRouterOptions { K = c.K });
        var logits = c.Tensor();
        var train = router.Route(logits, Training(c.Experts));
        var eval = router.Route(logits, Evaluation(c.Experts));
        Assert.Equal(train.Expert, eval.Expert);
        Assert.Equal(train.Weights.ToDoubleArray(), eval.Weights.ToDoubleArray());
        Assert.Null(eval.SparsityLoss);
        Assert.Equal(1e-8f, router.Lambda.Value);
        Assert.Equal(0, router.Lambda.Updates);
    }

    [Property(Arbitrary = [typeof(RouterArbitraries)], MaxTest = 400)]
    public void ScalingTheLogitsByAPositiveConstantKeepsTheExpertSet(GateLogitsCase c, PositiveInt scaleSeed)
    {
        double scale = Math.Exp((scaleSeed.Get % 1000) / 1000.0 * 9.2 - 4.6);         // c in [0.01, 100]
        var router = new ReluRouter(c.Experts, new ReluRouterOptions { K = c.K });
        var values = c.Tensor().ToDoubleArray();
        var plan = router.Route(c.Tensor(values), Training(c.Experts));
        var scaled = router.Route(c.Tensor(values.Select(v => v * scale).ToArray()), Training(c.Experts));
        Assert.Equal(plan.Expert, scaled.Expert);
        Assert.Equal(plan.Extras["sparsity"], scaled.Extras["sparsity"]);
    }

    [Property(MaxTest = 60)]
    public void ScalingTheRouterWeightsOfALayerKeepsTheExpertSet(PositiveInt seed, PositiveInt scaleSeed)
    {
        double scale = Math.Exp((scaleSeed.Get % 1000) / 1000.0 * 9.2 - 4.6);
        var rng = new Rng((ulong)seed.Get);
        var layer = new MoeLayer(6, 8, new ReluRouter(5), rng, 0.5, DType.Float64);
        var x = Tensor.Randn(new Shape(9, 6), rng, dtype: DType.Float64);
        layer.Forward(x);
        var before = layer.LastPlan!.Expert;
        layer.Gate.Weight.CopyFrom(layer.Gate.Weight.MulScalar(scale).Detach());
        layer.Forward(x);
        Assert.Equal(before, layer.LastPlan!.Expert);
    }

    [Property(Arbitrary = [typeof(RouterArbitraries)], MaxTest = 500)]
    public void SparsityLossMatchesItsFormula(GateLogitsCase c, PositiveInt lambdaSeed)
    {
        if (c.Tokens == 0) return;
        float lambda = (float)Math.Pow(10, -8 + (lambdaSeed.Get % 900) / 100.0);      // 1e-8 .. 1e1
        var router = new ReluRouter(c.Experts, new ReluRouterOptions { K = c.K });
        router.Lambda.Value = lambda;
        var logits = c.Tensor();
        var plan = router.Route(logits, Training(c.Experts));
        double expected = SparsityLossByFormula(logits.ToDoubleArray(), c.Tokens, c.Experts, c.K, lambda);
        double actual = plan.SparsityLoss!.Item();
        Assert.True(Math.Abs(actual - expected) <= (c.Double ? 1e-12 : 1e-5) * Math.Max(Math.Abs(expected), 1e-30),
            $"{c}: L = {actual}, formula {expected}");
    }

    [Fact]
    public void SparsityLossAtUniformRoutingIsLambdaTimesTheMeanGate()
    {
        // Every token uses exactly k experts with gate g, each expert serves T·k/E tokens:
        // L = λ·E/(k·T²)·Σ_e (T·k/E·g)·(T·k/E) = λ·k·g. (The aux loss's "equals the coefficient at uniform routing".)
        int tokens = 8, experts = 4, k = 2;
        var l = new double[tokens * experts];
        for (int t = 0; t < tokens; t++)
            for (int e = 0; e < experts; e++)
                l[t * experts + e] = (e - t) % 2 == 0 ? 0.5 : -1;
        var router = new ReluRouter(experts, new ReluRouterOptions { K = k });
        router.Lambda.Value = 0.25f;
        var loss = router.Route(Tensor.FromArray(l, tokens, experts), Training(experts)).SparsityLoss!.Item();
        Assert.Equal(0.25 * k * 0.5, loss, 7);
    }

    [Property(MaxTest = 150)]
    public void SparsityLossGradientMatchesFiniteDifferences(PositiveInt seed)
    {
        var rng = new Rng((ulong)seed.Get);
        int tokens = 1 + rng.NextInt(8), experts = 1 + rng.NextInt(8), k = 1 + rng.NextInt(experts);
        var router = new ReluRouter(experts, new ReluRouterOptions { K = k });
        router.Lambda.Value = 0.7f;
        // |l| ≥ 0.05: a finite-difference step never crosses the kink at 0, so the counts stay put.
        var logits = GradChecker.AwayFromZero(new Shape(tokens, experts), rng, margin: 0.05);
        GradChecker.Check("ReluRouter.SparsityLoss", x => router.Route(x[0], Training(experts)).SparsityLoss!,
            [logits], new GradChecker.Options(Seed: (ulong)seed.Get));
        GradChecker.Check("ReluRouter.Weights", x => router.Route(x[0], Training(experts)).Weights,
            [logits], new GradChecker.Options(Seed: (ulong)seed.Get));
    }

    /// <summary>Plans with a given number of active gates among T·E.</summary>
    private static RoutingPlan PlanWithActiveGates(int tokens, int experts, int active)
    {
        var l = Enumerable.Range(0, tokens * experts).Select(i => i < active ? 1.0 : -1.0).ToArray();
        return new ReluRouter(experts).Route(Tensor.FromArray(l, tokens, experts), Evaluation(experts));
    }

    [Property(MaxTest = 400)]
    public void SharedLambdaMovesOnceAllLayersReportedInTheStatedDirection(PositiveInt seed)
    {
        var rng = new Rng((ulong)seed.Get);
        int layers = 1 + rng.NextInt(4), experts = 2 + rng.NextInt(7), k = 1 + rng.NextInt(experts - 1), tokens = 1 + rng.NextInt(6);
        var routers = ReluRouter.ForLayers(layers, experts, new ReluRouterOptions { K = k, InitialLambda = 3e-4f, Alpha = 1.25f });
        var lambda = routers[0].Lambda;
        Assert.All(routers, r => Assert.Same(lambda, r.Lambda));

        for (int step = 0; step < 3; step++)
        {
            float before = lambda.Value;
            double sum = 0;
            int plans = 0;
            for (int layer = 0; layer < layers; layer++)
            {
                // One or two plans per layer (gradient accumulation), each with its own sparsity.
                var made = Enumerable.Range(0, 1 + rng.NextInt(2))
                    .Select(_ => PlanWithActiveGates(tokens, experts, rng.NextInt(tokens * experts + 1))).ToArray();
                foreach (var p in made) { sum += ReluRouter.Sparsity(p); plans++; }
                routers[layer].AfterOptimizerStep(made);
                if (layer < layers - 1) Assert.Equal(before, lambda.Value);      // waits for the other layers
            }
            double meanSparsity = sum / plans, target = 1.0 - (double)k / experts;
            float expected = meanSparsity < target ? before * 1.25f : before / 1.25f;
            Assert.Equal(expected, lambda.Value);
            Assert.Equal(meanSparsity < target, lambda.Value > before);
            Assert.Equal(meanSparsity, lambda.LastSparsity, 12);
        }
        Assert.Equal(3, lambda.Updates);
    }

    [Property(MaxTest = 200)]
    public void PerLayerLambdasMoveEachOnItsOwnLayersSparsity(PositiveInt seed)
    {
        var rng = new Rng((ulong)seed.Get);
        int layers = 2 + rng.NextInt(3), experts = 2 + rng.NextInt(7), k = 1 + rng.NextInt(experts - 1), tokens = 1 + rng.NextInt(6);
        var routers = ReluRouter.ForLayers(layers, experts, new ReluRouterOptions { K = k }, perLayerLambda: true);
        Assert.Equal(layers, routers.Select(r => r.Lambda).Distinct().Count());
        foreach (var router in routers)
        {
            var plan = PlanWithActiveGates(tokens, experts, rng.NextInt(tokens * experts + 1));
            router.AfterOptimizerStep([plan]);
            bool tooDense = ReluRouter.Sparsity(plan) < router.TargetSparsity;
            Assert.Equal(tooDense ? 1e-8f * 1.2f : 1e-8f / 1.2f, router.Lambda.Value);
        }
    }

    [Fact]
    public void AtTheTargetSparsityLambdaDecreases()
    {
        // S = τ exactly is "not below τ": λ/α.
        var router = new ReluRouter(4, new ReluRouterOptions { K = 1 });
        router.AfterOptimizerStep([PlanWithActiveGates(4, 4, 4)]);                   // S = 1 − 4/16 = τ
        Assert.Equal(1e-8f / 1.2f, router.Lambda.Value);
    }

    [Fact]
    public void ReportingTwiceBeforeTheOtherLayersIsAnError()
    {
        var routers = ReluRouter.ForLayers(2, 4);
        var plan = PlanWithActiveGates(2, 4, 3);
        routers[0].AfterOptimizerStep([plan]);
        var ex = Assert.Throws<InvalidOperationException>(() => routers[0].AfterOptimizerStep([plan]));
        Assert.Contains("reported twice", ex.Message);
    }

    [Fact]
    public void LambdaIsCheckpointState()
    {
        var routers = ReluRouter.ForLayers(2, 8);
        routers[0].Lambda.Value = 3.5e-3f;
        var state = routers[1].StateDict();
        var saved = Assert.Single(state);
        Assert.Equal("router_state.lambda", saved.Key);
        Assert.Equal(ReluRouter.LambdaStateKey, saved.Key);
        Assert.Equal(DType.Float32, saved.Value.DType);
        Assert.Equal(0, saved.Value.Rank);

        string path = Path.Combine(Path.GetTempPath(), $"relu-lambda-{Environment.ProcessId}.safetensors");
        try
        {
            PureMoE.IO.TensorIO.Save(path, state);
            var fresh = ReluRouter.ForLayers(2, 8);
            fresh[0].LoadStateDict(PureMoE.IO.TensorIO.Load(path));
            Assert.Equal(3.5e-3f, fresh[1].Lambda.Value);                 // shared: both layers see it
        }
        finally { File.Delete(path); }

        Assert.Throws<KeyNotFoundException>(() => routers[0].LoadStateDict(new Dictionary<string, Tensor>()));
        var bad = new Dictionary<string, Tensor> { ["router_state.lambda"] = Tensor.Scalar(-1) };
        Assert.Contains("finite and > 0", Assert.Throws<ArgumentException>(() => routers[0].LoadStateDict(bad)).Message);
    }

    [Theory]
    [InlineData(0, 2, 1e-8f, 1.2f, "Experts")]
    [InlineData(8, 0, 1e-8f, 1.2f, "K = 0")]
    [InlineData(8, 9, 1e-8f, 1.2f, "K = 9")]
    [InlineData(8, 2, 0f, 1.2f, "InitialLambda = 0")]
    [InlineData(8, 2, float.NaN, 1.2f, "InitialLambda")]
    [InlineData(8, 2, 1e-8f, 1f, "Alpha = 1")]
    [InlineData(8, 2, 1e-8f, 0.5f, "Alpha")]
    public void InvalidOptionsAreNamed(int experts, int k, float lambda0, float alpha, string named)
    {
        var ex = Assert.ThrowsAny<ArgumentException>(() =>
            new ReluRouter(experts, new ReluRouterOptions { K = k, InitialLambda = lambda0, Alpha = alpha }));
        Assert.Contains(named, ex.Message);
    }

    [Fact]
    public void WrongLogitsAndForeignPlansAreRejected()
    {
        var router = new ReluRouter(4);
        Assert.Contains("[T, 4]", Assert.Throws<ArgumentException>(() => router.Route(Tensor.Zeros(new Shape(3, 5)), Training(4))).Message);
        var topk = new SoftmaxTopKTestRouter(4, 2).Route(Tensor.Zeros(new Shape(3, 4)), Training(4));
        Assert.Contains("m = E", Assert.Throws<ArgumentException>(() => router.AfterOptimizerStep([topk])).Message);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void LayerGradientsMatchFiniteDifferences(ulong seed)
    {
        // A whole MoE layer in float64, output and the (large-λ) sparsity loss together. Inputs are redrawn until
        // every logit is at least 1e-3 from the kink at 0 (a step of 1e-6 on any weight moves a logit far less).
        var router = new ReluRouter(4, new ReluRouterOptions { K = 2 });
        router.Lambda.Value = 0.5f;
        var layer = new MoeLayer(5, 7, router, new Rng(seed), 0.4, DType.Float64);
        var rng = new Rng(seed + 100);
        Tensor x;
        do x = Tensor.Randn(new Shape(6, 5), rng, dtype: DType.Float64);
        while (layer.Gate.Forward(x).ToDoubleArray().Min(Math.Abs) < 1e-3);

        LayerGradCheck.Check("MoeLayer+ReluRouter", layer, () =>
        {
            var y = layer.Forward(x);
            var plan = layer.LastPlan!;
            Assert.InRange(plan.Expert.Count(e => e >= 0), 1, 6 * 4 - 1);       // some gates on, some off
            return Tensor.Concat([y.Reshape(y.Numel), plan.SparsityLoss!.Reshape(1)], 0);
        }, seed, extraInputs: x);
    }
}
