using FsCheck;
using FsCheck.Fluent;
using PureMoE.Moe.Parallel;
using PureMoE.Moe.Routing;
using PureMoE.Moe.Tests.Routing;

namespace PureMoE.Moe.Tests.ExpertParallel;

/// <summary>
/// One expert-parallel case: P ranks, E experts, a router, a placement (contiguous or a random balanced map), width,
/// and each rank's token count. Float64 throughout so "equal to the 1-device layer" can be checked to 1e-6 relative.
/// </summary>
public sealed record EpCase(int Devices, int Experts, string Router, bool RandomPlacement, int Hidden, int Intermediate, int[] Tokens, ulong Seed)
{
    /// <summary>Router names covered: TopK dropless and at capacity, Rectify FR+IR, ReLU, C2R.</summary>
    public static readonly string[] Routers = ["topk", "topk-capacity", "rectify", "relu", "c2r"];

    /// <summary>The router of this case.</summary>
    public IRouter MakeRouter()
    {
        var rng = new Rng(Seed + 7);
        return Router switch
        {
            "topk" => new TopKRouter(Experts, new TopKOptions { K = 2, AuxLossCoeff = 0.01, ZLossCoeff = 0.001 }),
            "topk-capacity" => new TopKRouter(Experts, new TopKOptions { K = 2, CapacityFactor = 0.75, AuxLossCoeff = 0.01 }),
            "rectify" => new RectifyRouter(Experts, new RectifyOptions
            {
                K = 1, FillIn = true, IntraGpu = true, Unrouted = UnroutedPolicy.IgnoreKth, CapacityFactor = 0.6, AuxLossCoeff = 0.01,
            }),
            "relu" => new ReluRouter(Experts, new ReluRouterOptions { K = 2, InitialLambda = 0.01f }),
            "c2r" => new C2RRouter(Experts, new C2ROptions { K = 2, Candidates = 1 + rng.NextInt(Experts - 1) }, RouterGen.RandomLists(Experts, rng)),
            _ => throw new ArgumentException(Router),
        };
    }

    /// <summary>Contiguous, or a random map with E/P experts on every device.</summary>
    public ExpertPlacement MakePlacement()
    {
        if (!RandomPlacement) return ExpertPlacement.Contiguous(Experts, Devices);
        var map = Enumerable.Range(0, Experts).Select(e => e / (Experts / Devices)).ToArray();
        var rng = new Rng(Seed + 11);
        for (int a = map.Length - 1; a > 0; a--) { int b = rng.NextInt(a + 1); (map[a], map[b]) = (map[b], map[a]); }
        return new ExpertPlacement(map, Devices);
    }

    /// <summary>Each rank's tokens [T_r, d] (float64, requiring gradients).</summary>
    public Tensor[] MakeInputs()
    {
        return Tokens.Select((t, r) =>
        {
            var x = Tensor.Randn(new Shape(t, Hidden), new Rng(Seed * 31 + (ulong)r + 1), dtype: DType.Float64);
            x.RequiresGrad = true;
            return x;
        }).ToArray();
    }

    /// <inheritdoc />
    public override string ToString() =>
        $"P={Devices} E={Experts} {Router} {(RandomPlacement ? "random" : "contiguous")} d={Hidden} ff={Intermediate} T=[{string.Join(",", Tokens)}] seed={Seed}";

    /// <summary>A case generator for P in {1, 2, 4, 8}.</summary>
    public static Gen<EpCase> Gen =>
        from p in FsCheck.Fluent.Gen.Elements(1, 2, 4, 8)
        from perDevice in FsCheck.Fluent.Gen.Choose(1, 2)
        from router in FsCheck.Fluent.Gen.Elements(Routers)
        from random in FsCheck.Fluent.Gen.Elements(false, true)
        from hidden in FsCheck.Fluent.Gen.Choose(2, 6)
        from inter in FsCheck.Fluent.Gen.Choose(2, 6)
        from seed in RouterGen.Seed
        select new EpCase(p, p * Math.Max(perDevice, (4 + p - 1) / p), router, random, hidden, inter, TokenCounts(p, seed), seed);

    /// <summary>1 to 10 tokens per rank, from a seed.</summary>
    public static int[] TokenCounts(int devices, ulong seed)
    {
        var rng = new Rng(seed + 3);
        return Enumerable.Range(0, devices).Select(_ => 1 + rng.NextInt(10)).ToArray();
    }
}

/// <summary>FsCheck arbitraries for expert-parallel properties.</summary>
public static class EpArbitraries
{
    /// <summary>Expert-parallel cases.</summary>
    public static Arbitrary<EpCase> EpCase() => ExpertParallel.EpCase.Gen.ToArbitrary();
}
