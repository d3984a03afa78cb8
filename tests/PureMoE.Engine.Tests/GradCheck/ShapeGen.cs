using FsCheck;
using FsCheck.Fluent;

namespace PureMoE.Testing;

/// <summary>A random shape and a seed for the values (and the device the check runs on).</summary>
public sealed record ShapeCase(int[] Dims, ulong Seed, bool Reference)
{
    /// <summary>The shape.</summary>
    public Shape Shape => new(Dims);
    /// <summary>Device.Cpu or Device.CpuReference.</summary>
    public Device Device => Reference ? Device.CpuReference : Device.Cpu;
    /// <summary>A generator seeded by <see cref="Seed"/>.</summary>
    public Rng Rng() => new(Seed);
    /// <inheritdoc />
    public override string ToString() => $"{Shape} seed={Seed} {Device}";
}

/// <summary>Two broadcast-compatible shapes.</summary>
public sealed record BroadcastCase(int[] A, int[] B, ulong Seed, bool Reference)
{
    /// <summary>First operand shape.</summary>
    public Shape ShapeA => new(A);
    /// <summary>Second operand shape.</summary>
    public Shape ShapeB => new(B);
    /// <summary>The broadcast result shape.</summary>
    public Shape Result => Shape.Broadcast(ShapeA, ShapeB, "test");
    /// <summary>Device.Cpu or Device.CpuReference.</summary>
    public Device Device => Reference ? Device.CpuReference : Device.Cpu;
    /// <summary>A generator seeded by <see cref="Seed"/>.</summary>
    public Rng Rng() => new(Seed);
    /// <inheritdoc />
    public override string ToString() => $"{ShapeA} & {ShapeB} seed={Seed} {Device}";
}

/// <summary>A shape of rank ≥ 1, an axis in [−rank, rank) and keepDim.</summary>
public sealed record AxisCase(int[] Dims, int Axis, bool KeepDim, ulong Seed, bool Reference)
{
    /// <summary>The shape.</summary>
    public Shape Shape => new(Dims);
    /// <summary>The axis normalised to [0, rank).</summary>
    public int PositiveAxis => Axis < 0 ? Axis + Dims.Length : Axis;
    /// <summary>Device.Cpu or Device.CpuReference.</summary>
    public Device Device => Reference ? Device.CpuReference : Device.Cpu;
    /// <summary>A generator seeded by <see cref="Seed"/>.</summary>
    public Rng Rng() => new(Seed);
    /// <inheritdoc />
    public override string ToString() => $"{Shape} axis={Axis} keepDim={KeepDim} seed={Seed} {Device}";
}

/// <summary>
/// FsCheck generators of small tensor shapes: ranks 0–4, dims 1–5 (size-1 dims frequent), element counts capped
/// so float64 finite differences stay fast; broadcast-compatible pairs (leading dims dropped, dims set to 1 on
/// either side).
/// </summary>
public static class ShapeGen
{
    /// <summary>Largest element count of a generated shape.</summary>
    public const int MaxNumel = 120;

    /// <summary>A dimension in 1..maxDim with 1 over-represented.</summary>
    public static Gen<int> Dim(int maxDim = 5) =>
        Gen.Frequency((1, Gen.Constant(1)), (3, Gen.Choose(1, maxDim)));

    /// <summary>Dims of a shape with rank in [minRank, maxRank], dims 1..maxDim, at most <paramref name="maxNumel"/> elements.</summary>
    public static Gen<int[]> Dims(int minRank = 0, int maxRank = 4, int maxDim = 5, int maxNumel = MaxNumel) =>
        from rank in Gen.Choose(minRank, maxRank)
        from dims in Gen.ArrayOf(Dim(maxDim), rank)
        select Cap(dims, maxNumel);

    /// <summary>Shrinks the largest dims until the element count is at most <paramref name="maxNumel"/>.</summary>
    public static int[] Cap(int[] dims, int maxNumel)
    {
        var d = (int[])dims.Clone();
        while (d.Aggregate(1, (a, b) => a * b) > maxNumel)
        {
            int at = Array.IndexOf(d, d.Max());
            d[at]--;
        }
        return d;
    }

    /// <summary>A value seed.</summary>
    public static Gen<ulong> Seed => Gen.Choose(0, int.MaxValue).Select(i => (ulong)i);

    /// <summary>Which CPU device (false: Device.Cpu, true: Device.CpuReference).</summary>
    public static Gen<bool> Reference => Gen.Elements(false, true);

    /// <summary>A shape case.</summary>
    public static Gen<ShapeCase> Shapes(int minRank = 0, int maxRank = 4, int maxDim = 5, int maxNumel = MaxNumel) =>
        from d in Dims(minRank, maxRank, maxDim, maxNumel)
        from s in Seed
        from r in Reference
        select new ShapeCase(d, s, r);

    /// <summary>
    /// A broadcast-compatible pair: a full shape, then each side independently drops some leading dims and sets
    /// some dims to 1.
    /// </summary>
    public static Gen<BroadcastCase> BroadcastPairs(int maxRank = 4, int maxNumel = MaxNumel) =>
        from full in Dims(0, maxRank, 5, maxNumel)
        from a in Derived(full)
        from b in Derived(full)
        from s in Seed
        from r in Reference
        select new BroadcastCase(a, b, s, r);

    /// <summary>A shape broadcastable to <paramref name="full"/>: some leading dims dropped, some dims set to 1.</summary>
    public static Gen<int[]> Derived(int[] full) =>
        from drop in Gen.Frequency((2, Gen.Constant(0)), (1, Gen.Choose(0, full.Length)))
        from ones in Gen.ArrayOf(Gen.Frequency((3, Gen.Constant(false)), (1, Gen.Constant(true))), full.Length)
        select full.Skip(drop).Select((d, i) => ones[i + drop] ? 1 : d).ToArray();

    /// <summary>An axis case over shapes of rank 1..maxRank.</summary>
    public static Gen<AxisCase> Axes(int maxRank = 4, int maxNumel = MaxNumel) =>
        from d in Dims(1, maxRank, 5, maxNumel)
        from axis in Gen.Choose(-d.Length, d.Length - 1)
        from keep in Gen.Elements(false, true)
        from s in Seed
        from r in Reference
        select new AxisCase(d, axis, keep, s, r);
}

/// <summary>The arbitraries of <see cref="ShapeGen"/>, for <c>[Property(Arbitrary = [typeof(ShapeArbitraries)])]</c>.</summary>
public static class ShapeArbitraries
{
    /// <summary>Shapes of rank 0–4.</summary>
    public static Arbitrary<ShapeCase> ShapeCase() => ShapeGen.Shapes().ToArbitrary();
    /// <summary>Broadcast pairs.</summary>
    public static Arbitrary<BroadcastCase> BroadcastCase() => ShapeGen.BroadcastPairs().ToArbitrary();
    /// <summary>Axis cases.</summary>
    public static Arbitrary<AxisCase> AxisCase() => ShapeGen.Axes().ToArbitrary();
}
