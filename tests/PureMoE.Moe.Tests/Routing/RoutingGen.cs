using FsCheck;
using FsCheck.Fluent;
using PureMoE.Moe.Parallel;
using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>How a generated logits matrix looks: the shapes of trouble a router must survive.</summary>
public enum LogitStyle
{
    /// <summary>Independent normals (scale 2): no ties in practice.</summary>
    Gaussian,
    /// <summary>Integers in {−1, 0, 1}: ties everywhere, inside rows and across tokens.</summary>
    SmallIntegers,
    /// <summary>Every token has the same (random) row: all tokens want the same experts.</summary>
    EqualRows,
    /// <summary>Each row constant: all experts tie for every token.</summary>
    ConstantRows,
    /// <summary>Entries ±30 or normal: saturated softmax, probabilities near 0 and 1.</summary>
    Extremes,
    /// <summary>Three random values repeated across the matrix.</summary>
    Repeated,
}

/// <summary>Router logits [T, E] described by a style and a seed (values made on demand).</summary>
public sealed record LogitsCase(int Tokens, int Experts, LogitStyle Style, ulong Seed, bool Float64)
{
    /// <summary>The values, row-major [T, E].</summary>
    public double[] Values()
    {
        var rng = new Rng(Seed);
        var v = new double[Tokens * Experts];
        double[] row = Enumerable.Range(0, Experts).Select(_ => 2 * rng.NextGaussian()).ToArray();
        double[] palette = [rng.NextGaussian(), rng.NextGaussian(), rng.NextGaussian()];
        for (int t = 0; t < Tokens; t++)
        {
            double constant = rng.NextGaussian();
            for (int e = 0; e < Experts; e++)
                v[t * Experts + e] = Style switch
                {
                    LogitStyle.Gaussian => 2 * rng.NextGaussian(),
                    LogitStyle.SmallIntegers => rng.NextInt(3) - 1,
                    LogitStyle.EqualRows => row[e],
                    LogitStyle.ConstantRows => constant,
                    LogitStyle.Extremes => rng.NextInt(3) switch { 0 => 30, 1 => -30, _ => rng.NextGaussian() },
                    _ => palette[rng.NextInt(3)],
                };
        }
        return v;
    }

    /// <summary>The logits as a tensor (float32 unless <see cref="Float64"/>), optionally a gradient leaf.</summary>
    public Tensor Tensor(bool requiresGrad = false)
    {
        var t = PureMoE.Tensor.FromArray(Values(), Tokens, Experts);
        if (!Float64) t = t.To(DType.Float32);
        t.RequiresGrad = requiresGrad;
        return t;
    }

    /// <inheritdoc />
    public override string ToString() => $"T={Tokens} E={Experts} {Style} seed={Seed} {(Float64 ? "f64" : "f32")}";
}

/// <summary>Experts on P devices: contiguous or a random balanced map; and the device the tokens come from.</summary>
public sealed record PlacementCase(int Experts, int Devices, bool Shuffled, ulong Seed, int SourceDevice)
{
    /// <summary>The placement (every device holds E/P experts).</summary>
    public ExpertPlacement Placement()
    {
        var map = Enumerable.Range(0, Experts).Select(e => e / (Experts / Devices)).ToArray();
        if (Shuffled)
        {
            var rng = new Rng(Seed);
            for (int i = map.Length - 1; i > 0; i--) { int j = rng.NextInt(i + 1); (map[i], map[j]) = (map[j], map[i]); }
        }
        return new ExpertPlacement(map, Devices);
    }

    /// <summary>A training context on <see cref="SourceDevice"/>.</summary>
    public RoutingContext Context() => new() { Placement = Placement(), SourceDevice = SourceDevice, Training = true };

    /// <inheritdoc />
    public override string ToString() => $"{Placement()} from device {SourceDevice}";
}

/// <summary>A TopK router configuration and its input.</summary>
public sealed record TopKCase(LogitsCase Logits, TopKOptions Options, PlacementCase Placement)
{
    /// <summary>The router.</summary>
    public TopKRouter Router() => new(Logits.Experts, Options);

    /// <inheritdoc />
    public override string ToString() =>
        $"{Logits}; k={Options.K} {Options.Normalization} CF={Options.CapacityFactor?.ToString() ?? "none"} {Options.DropPolicy}" +
        $"{(Options.PadToCapacity ? " pad" : "")}{(Options.StraightThroughTop1 ? " straight-through" : "")}; {Placement}";
}

/// <summary>A Rectify router configuration and its input.</summary>
public sealed record RectifyCase(LogitsCase Logits, RectifyOptions Options, PlacementCase Placement)
{
    /// <summary>The router.</summary>
    public RectifyRouter Router() => new(Logits.Experts, Options);

    /// <inheritdoc />
    public override string ToString() =>
        $"{Logits}; k={Options.K} CF={Options.CapacityFactor} IR={(Options.IntraGpu ? Options.Unrouted.ToString() : "off")}" +
        $" FR={(Options.FillIn ? Options.FillPriority.ToString() : "off")}; {Placement}";
}

/// <summary>FsCheck generators for routing cases.</summary>
public static class RoutingGen
{
    /// <summary>A seed.</summary>
    public static Gen<ulong> Seed => Gen.Choose(0, int.MaxValue).Select(s => (ulong)s);

    /// <summary>Tokens 1–64 (small counts frequent), experts 2–16, a logit style.</summary>
    public static Gen<LogitsCase> Logits(int maxTokens = 64, int maxExperts = 16, bool onlyGaussian = false) =>
        from tokens in Gen.Frequency((2, Gen.Choose(1, 8)), (3, Gen.Choose(1, maxTokens)))
        from experts in Gen.Choose(2, maxExperts)
        from style in onlyGaussian ? Gen.Constant(LogitStyle.Gaussian)
            : Gen.Frequency((4, Gen.Constant(LogitStyle.Gaussian)), (2, Gen.Constant(LogitStyle.SmallIntegers)),
                (1, Gen.Constant(LogitStyle.EqualRows)), (1, Gen.Constant(LogitStyle.ConstantRows)),
                (2, Gen.Constant(LogitStyle.Extremes)), (1, Gen.Constant(LogitStyle.Repeated)))
        from seed in Seed
        from f64 in Gen.Frequency((3, Gen.Constant(false)), (1, Gen.Constant(true)))
        select new LogitsCase(tokens, experts, style, seed, f64);

    /// <summary>k in [1, min(E, 4)] (k = E included when E is small).</summary>
    public static Gen<int> K(int experts, int min = 1, int maxK = 4) => Gen.Choose(min, Math.Max(min, Math.Min(experts, maxK)));

    /// <summary>A capacity factor in [0.25, 2]: quarter steps (exact products) or any value between.</summary>
    public static Gen<double> CapacityFactor =>
        Gen.Frequency((1, Gen.Choose(1, 8).Select(q => q * 0.25)), (1, Gen.Choose(0, 1000).Select(u => 0.25 + 1.75 * u / 1000)));

    /// <summary>A capacity factor or null (dropless) one time in four.</summary>
    public static Gen<double?> OptionalCapacityFactor =>
        Gen.Frequency((1, Gen.Constant<double?>(null)), (3, CapacityFactor.Select(cf => (double?)cf)));

    /// <summary>P dividing E, contiguous or shuffled, and a source device.</summary>
    public static Gen<PlacementCase> Placement(int experts) =>
        from devices in Gen.Elements(Enumerable.Range(1, experts).Where(p => experts % p == 0).ToArray())
        from shuffled in Gen.Elements(false, true)
        from seed in Seed
        from source in Gen.Choose(0, devices - 1)
        select new PlacementCase(experts, devices, shuffled, seed, source);

    /// <summary>TopK options valid for E experts.</summary>
    public static Gen<TopKOptions> TopKOptionsFor(int experts) =>
        from k in K(experts)
        from normalization in k == 1 ? Gen.Elements(TopKNormalization.PreSoftmax, TopKNormalization.SoftmaxRenorm)
            : Gen.Elements(TopKNormalization.PreSoftmax, TopKNormalization.PostSoftmax, TopKNormalization.SoftmaxRenorm)
        from cf in OptionalCapacityFactor
        from policy in Gen.Elements(DropPolicy.Probs, DropPolicy.Position)
        from pad in cf is null ? Gen.Constant(false) : Gen.Elements(false, true)
        from straightThrough in k == 1 ? Gen.Elements(false, true) : Gen.Constant(false)
        from aux in Gen.Elements(0.0, 0.01)
        from z in Gen.Elements(0.0, 1e-3)
        select new TopKOptions
        {
            K = k, Normalization = normalization, CapacityFactor = cf, DropPolicy = policy, PadToCapacity = pad,
            StraightThroughTop1 = straightThrough, AuxLossCoeff = aux, ZLossCoeff = z,
        };

    /// <summary>A TopK case: logits, valid options, a placement.</summary>
    public static Gen<TopKCase> TopK(bool onlyGaussian = false, int maxTokens = 64, int maxExperts = 16) =>
        from logits in Logits(maxTokens, maxExperts, onlyGaussian)
        from options in TopKOptionsFor(logits.Experts)
        from placement in Placement(logits.Experts)
        select new TopKCase(logits, options, placement);

    /// <summary>Rectify options valid for E experts (k + 1 ≤ E when fill-in is on).</summary>
    public static Gen<RectifyOptions> RectifyOptionsFor(int experts) =>
        from fillIn in Gen.Elements(false, true)
        from k in K(fillIn ? experts - 1 : experts)
        from cf in CapacityFactor
        from intraGpu in Gen.Elements(false, true)
        from unrouted in Gen.Elements(UnroutedPolicy.All, UnroutedPolicy.Any, UnroutedPolicy.IgnoreKth)
        from priority in Gen.Elements(FillPriority.Score, FillPriority.Top1Gate, FillPriority.Position)
        from aux in Gen.Elements(0.0, 0.01)
        from z in Gen.Elements(0.0, 1e-3)
        select new RectifyOptions
        {
            K = k, CapacityFactor = cf, IntraGpu = intraGpu, Unrouted = unrouted, FillIn = fillIn, FillPriority = priority,
            AuxLossCoeff = aux, ZLossCoeff = z,
        };

    /// <summary>A Rectify case: logits, valid options, a placement.</summary>
    public static Gen<RectifyCase> Rectify(bool onlyGaussian = false, int maxTokens = 64, int maxExperts = 16) =>
        from logits in Logits(maxTokens, maxExperts, onlyGaussian)
        from options in RectifyOptionsFor(logits.Experts)
        from placement in Placement(logits.Experts)
        select new RectifyCase(logits, options, placement);
}

/// <summary>Arbitraries for [Property] tests.</summary>
public static class RoutingArbitraries
{
    /// <summary>Any TopK case.</summary>
    public static Arbitrary<TopKCase> TopKCase() => RoutingGen.TopK().ToArbitrary();

    /// <summary>Any Rectify case.</summary>
    public static Arbitrary<RectifyCase> RectifyCase() => RoutingGen.Rectify().ToArbitrary();

    /// <summary>Any logits.</summary>
    public static Arbitrary<LogitsCase> LogitsCase() => RoutingGen.Logits().ToArbitrary();
}

/// <summary>Host helpers for router tests.</summary>
public static class RoutingTestHelpers
{
    /// <summary>Bits of each value (for bit-for-bit comparisons).</summary>
    public static long[] Bits(double[] values) => values.Select(BitConverter.DoubleToInt64Bits).ToArray();

    /// <summary>Indices of a row sorted by value descending, ties lower index first (TopK's order).</summary>
    public static int[] Ranking(double[] row) =>
        Enumerable.Range(0, row.Length).OrderByDescending(e => row[e]).ThenBy(e => e).ToArray();

    /// <summary>Row t of a row-major [T, n] array.</summary>
    public static double[] Row(double[] values, int t, int n) => values.AsSpan(t * n, n).ToArray();
}
