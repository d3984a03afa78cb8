using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using PureMoE.Moe.Routing;
using PureMoE.Testing;
using static PureMoE.Moe.Tests.Routing.RoutingTestHelpers;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>
/// A perfectly uniform routing: T = n·E tokens, token t's logits are the row v shifted cyclically by t, so every
/// expert is the j-th choice of exactly n tokens (count_e = n·k = T·k/E) and Σ_t s_te = n·Σ softmax(v) = T/E.
/// </summary>
public sealed record UniformCase(int Experts, int K, int TokensPerExpert, ulong Seed, bool Float64)
{
    /// <summary>Tokens T = n·E.</summary>
    public int Tokens => Experts * TokensPerExpert;

    /// <summary>The cyclic logits [T, E] (distinct values in v, so top-k has no ties).</summary>
    public Tensor Logits()
    {
        var rng = new Rng(Seed);
        var v = Enumerable.Range(0, Experts).Select(e => e * 0.37 + 0.1 * rng.NextDouble()).ToArray();
        var values = new double[Tokens * Experts];
        for (int t = 0; t < Tokens; t++)
            for (int e = 0; e < Experts; e++) values[t * Experts + e] = v[(e + t) % Experts];
        var logits = Tensor.FromArray(values, Tokens, Experts);
        return Float64 ? logits : logits.To(DType.Float32);
    }

    /// <inheritdoc />
    public override string ToString() => $"E={Experts} k={K} n={TokensPerExpert} seed={Seed} {(Float64 ? "f64" : "f32")}";
}

/// <summary>Generators for the loss tests.</summary>
public static class LossArbitraries
{
    /// <summary>A uniform routing case.</summary>
    public static Arbitrary<UniformCase> UniformCase() =>
        (from experts in Gen.Choose(2, 16)
         from k in RoutingGen.K(experts)
         from n in Gen.Choose(1, 4)
         from seed in RoutingGen.Seed
         from f64 in Gen.Elements(false, true)
         select new UniformCase(experts, k, n, seed, f64)).ToArbitrary();

    /// <summary>Small float64 TopK cases with Gaussian logits (away from ties, for finite differences).</summary>
    public static Arbitrary<TopKCase> TopKCase() =>
        (from c in RoutingGen.TopK(onlyGaussian: true, maxTokens: 12, maxExperts: 8)
         select c with { Logits = c.Logits with { Float64 = true } }).ToArbitrary();
}

/// <summary>ROUTERS.md §6.3 for TopK: aux loss and z-loss values and gradients; straight-through.</summary>
public class TopKLossTests
{
    private static RoutingPlan Route(TopKOptions options, Tensor logits, int experts) =>
        new TopKRouter(experts, options).Route(logits, RoutingContext.SingleDevice(experts));

    /// <summary>Aux = coefficient at perfectly uniform routing, with and without capacity, for every normalisation.</summary>
    [Property(Arbitrary = [typeof(LossArbitraries)], MaxTest = 300)]
    public void AuxLossEqualsCoefficientAtUniformRouting(UniformCase c)
    {
        foreach (var normalization in new[] { TopKNormalization.PreSoftmax, TopKNormalization.PostSoftmax, TopKNormalization.SoftmaxRenorm })
        {
            if (normalization == TopKNormalization.PostSoftmax && c.K == 1) continue;
            foreach (double? cf in new double?[] { null, 0.5 })
            {
                var options = new TopKOptions { K = c.K, Normalization = normalization, CapacityFactor = cf, AuxLossCoeff = 0.01 };
                var plan = Route(options, c.Logits(), c.Experts);
                Assert.All(Capacity.CountPerExpert(Enumerable.Range(0, plan.Expert.Length)
                    .Select(i => new PairCandidate(i, i / c.K, plan.Expert[i], 0)), c.Experts), n => Assert.Equal(c.Tokens * c.K / c.Experts, n));
                Assert.Equal(0.01, plan.AuxLoss!.Item(), c.Float64 ? 1e-15 : 1e-8);
            }
        }
    }

    /// <summary>Aux = coefficient when every token's logits are all equal (s = 1/E), whatever the counts.</summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = 200)]
    public void AuxLossEqualsCoefficientForUniformProbabilities(TopKCase c)
    {
        var logits = c.Logits with { Style = LogitStyle.ConstantRows };
        var plan = Route(c.Options with { AuxLossCoeff = 0.02 }, logits.Tensor(), logits.Experts);
        Assert.Equal(0.02, plan.AuxLoss!.Item(), logits.Float64 ? 1e-14 : 1e-7);
    }

    /// <summary>Aux and z-loss values equal their formulas computed on the host in float64.</summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = 400)]
    public void LossesMatchTheirFormulas(TopKCase c)
    {
        int t = c.Logits.Tokens, e = c.Logits.Experts, k = c.Options.K;
        var options = c.Options with { AuxLossCoeff = 0.01, ZLossCoeff = 1e-3 };
        var logits = c.Logits.Tensor();
        var plan = new TopKRouter(e, options).Route(logits, c.Placement.Context());
        double[] l = logits.ToDoubleArray();

        double zSum = 0, aux = 0, zScale = 0;
        var mass = new double[e];
        for (int tok = 0; tok < t; tok++)
        {
            double max = Row(l, tok, e).Max();
            double sumExp = Row(l, tok, e).Sum(x => Math.Exp(x - max));
            double lse = max + Math.Log(sumExp);
            zSum += lse * lse;
            zScale += (Math.Abs(max) + 1) * (Math.Abs(max) + 1);     // lse's float rounding grows with |max|
            for (int x = 0; x < e; x++) mass[x] += Math.Exp(l[tok * e + x] - max) / sumExp;
        }
        for (int x = 0; x < e; x++) aux += mass[x] * plan.Expert.Count(y => y == x);   // counts before dropping
        aux *= 0.01 * e / ((double)k * t * t);
        double z = 1e-3 * zSum / t;

        // Float32 sums of up to 64 terms: relative 1e-5 for aux; z's error scales with the logits, not with z
        // (lse may be near 0 while the logits are not), so its bound is relative to mean (|max| + 1)².
        double relative = c.Logits.Float64 ? 1e-12 : 1e-5;
        Assert.Equal(1.0, plan.AuxLoss!.Item() / aux, relative);
        Assert.Equal(z, plan.ZLoss!.Item(), relative * 1e-3 * zScale / t);
    }

    /// <summary>z-loss and aux-loss gradients match central finite differences (float64 logits).</summary>
    [Property(Arbitrary = [typeof(LossArbitraries)], MaxTest = 150)]
    public void LossGradientsMatchFiniteDifferences(TopKCase c)
    {
        int e = c.Logits.Experts;
        var options = c.Options with { AuxLossCoeff = 0.5, ZLossCoeff = 0.3 };
        var context = c.Placement.Context();
        var router = new TopKRouter(e, options);
        GradChecker.Check($"z-loss {c}", x => router.Route(x[0], context).ZLoss!, c.Logits.Seed, c.Logits.Tensor());
        GradChecker.Check($"aux loss {c}", x => router.Route(x[0], context).AuxLoss!, c.Logits.Seed, c.Logits.Tensor());
    }

    /// <summary>Gate weights (after capacity) have the gradient finite differences give, for every option.</summary>
    [Property(Arbitrary = [typeof(LossArbitraries)], MaxTest = 200)]
    public void WeightGradientsMatchFiniteDifferences(TopKCase c)
    {
        // Straight-through is excluded: its forward is the constant 1 by design, its gradient that of g.
        var router = new TopKRouter(c.Logits.Experts, c.Options with { StraightThroughTop1 = false });
        var context = c.Placement.Context();
        GradChecker.Check($"TopK weights {c}", x => router.Route(x[0], context).Weights, c.Logits.Seed, c.Logits.Tensor());
    }

    /// <summary>
    /// Straight-through top-1: the forward weight of a kept pair is exactly 1; the gradient of any loss Σ w·r is
    /// bit for bit the one the PreSoftmax gate (the probability) would get.
    /// </summary>
    [Property(Arbitrary = [typeof(RoutingArbitraries)], MaxTest = 300)]
    public void StraightThroughHasWeightOneAndTheProbabilityGradient(TopKCase c)
    {
        int t = c.Logits.Tokens, e = c.Logits.Experts;
        var baseOptions = new TopKOptions { K = 1, CapacityFactor = c.Options.CapacityFactor, DropPolicy = c.Options.DropPolicy };
        var r = Tensor.Randn(new Shape(t, 1), new Rng(c.Logits.Seed), dtype: c.Logits.Float64 ? DType.Float64 : DType.Float32);

        double[] Gradient(TopKOptions options, out RoutingPlan plan)
        {
            var logits = c.Logits.Tensor(requiresGrad: true);
            plan = Route(options, logits, e);
            plan.Weights.Mul(r).Sum().Backward();
            return logits.Grad!.ToDoubleArray();
        }

        foreach (var normalization in new[] { TopKNormalization.PreSoftmax, TopKNormalization.SoftmaxRenorm })
        {
            var straight = Gradient(baseOptions with { Normalization = normalization, StraightThroughTop1 = true }, out var plan);
            var probability = Gradient(baseOptions with { Normalization = TopKNormalization.PreSoftmax }, out var reference);
            Assert.Equal(reference.Expert, plan.Expert);
            Assert.Equal(reference.Dropped, plan.Dropped);
            var w = plan.Weights.ToDoubleArray();
            for (int tok = 0; tok < t; tok++) Assert.Equal(plan.Dropped[tok] ? 0.0 : 1.0, w[tok]);
            Assert.Equal(Bits(probability), Bits(straight));
        }
    }
}
