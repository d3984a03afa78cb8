using FsCheck;
using FsCheck.Fluent;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>
/// Router logits [T, E] for a property: a seed for the values, the value style, and float64 or float32.
/// Styles: 0 Gaussian; 1 a coarse grid (many ties, some exact zeros); 2 mostly negative (sparse ReLU plans).
/// </summary>
public sealed record GateLogitsCase(int Tokens, int Experts, int K, ulong Seed, int Style, bool Double)
{
    /// <summary>The logit values, row-major [T·E].</summary>
    public double[] Values()
    {
        var rng = new Rng(Seed);
        var v = new double[Tokens * Experts];
        for (int i = 0; i < v.Length; i++)
            v[i] = Style switch
            {
                1 => Math.Round(rng.NextGaussian() * 2) / 2,
                2 => rng.NextGaussian() - 1.5,
                _ => rng.NextGaussian(),
            };
        return v;
    }

    /// <summary>The logits as a tensor (float32 values are the rounded doubles: read them back with ToDoubleArray).</summary>
    public Tensor Tensor() => Tensor(Values());

    /// <summary><paramref name="values"/> as a [T, E] tensor of this case's dtype.</summary>
    public Tensor Tensor(double[] values)
    {
        var t = PureMoE.Tensor.FromArray(values, Tokens, Experts);
        return Double ? t : t.To(DType.Float32);
    }

    /// <inheritdoc />
    public override string ToString() => $"T={Tokens} E={Experts} k={K} seed={Seed} style={Style} {(Double ? "f64" : "f32")}";
}

/// <summary>FsCheck generators for router properties.</summary>
public static class RouterGen
{
    /// <summary>A seed.</summary>
    public static Gen<ulong> Seed => Gen.Choose(0, int.MaxValue).Select(i => (ulong)i);

    /// <summary>T in 0..maxTokens (0 rarely), E in 1..maxExperts, k in 1..E, any style and dtype.</summary>
    public static Gen<GateLogitsCase> Logits(int maxTokens = 12, int maxExperts = 10) =>
        from tokens in Gen.Frequency((1, Gen.Constant(0)), (12, Gen.Choose(1, maxTokens)))
        from experts in Gen.Choose(1, maxExperts)
        from k in Gen.Choose(1, experts)
        from seed in Seed
        from style in Gen.Choose(0, 2)
        from dbl in Gen.Elements(true, false)
        select new GateLogitsCase(tokens, experts, k, seed, style, dbl);

    /// <summary>A random permutation of the experts other than i, for each i: arbitrary candidate lists.</summary>
    public static int[][] RandomLists(int experts, Rng rng) =>
        Enumerable.Range(0, experts).Select(i =>
        {
            var others = Enumerable.Range(0, experts).Where(j => j != i).ToArray();
            for (int a = others.Length - 1; a > 0; a--) { int b = rng.NextInt(a + 1); (others[a], others[b]) = (others[b], others[a]); }
            return others;
        }).ToArray();
}

/// <summary>Arbitraries: <see cref="GateLogitsCase"/>.</summary>
public static class RouterArbitraries
{
    /// <summary>Logits cases.</summary>
    public static Arbitrary<GateLogitsCase> GateLogitsCase() => RouterGen.Logits().ToArbitrary();
}
