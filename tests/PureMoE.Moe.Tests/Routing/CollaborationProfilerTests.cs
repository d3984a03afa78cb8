using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using PureMoE.IO;
using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>A profiling run: layers, experts, k, devices P (dividing E), tokens, and a seed for the expert sets.</summary>
public sealed record ProfilingCase(int Layers, int Experts, int K, int Devices, int Tokens, ulong Seed)
{
    /// <summary>The selected sets of each layer's tokens: k distinct experts, drawn with a per-layer bias so
    /// that some experts really do work together.</summary>
    public int[][][] Sets()
    {
        var rng = new Rng(Seed);
        return Enumerable.Range(0, Layers).Select(_ =>
        {
            var shift = rng.NextInt(Experts);
            return Enumerable.Range(0, Tokens).Select(_ =>
            {
                var set = new List<int>();
                int first = rng.NextInt(Experts);
                set.Add(first);
                while (set.Count < K)
                {
                    // Half of the time a "partner" of the first expert, else anything not yet taken.
                    int e = rng.NextInt(2) == 0 ? (first + shift + set.Count) % Experts : rng.NextInt(Experts);
                    if (!set.Contains(e)) set.Add(e);
                }
                return set.ToArray();
            }).ToArray();
        }).ToArray();
    }

    /// <inheritdoc />
    public override string ToString() => $"layers={Layers} E={Experts} k={K} P={Devices} T={Tokens} seed={Seed}";
}

/// <summary>Arbitraries: <see cref="ProfilingCase"/>.</summary>
public static class ProfilingArbitraries
{
    /// <summary>Profiling cases: E in 1..12, P a divisor of E, k ≤ E/P (so one device can hold a token's experts).</summary>
    public static Arbitrary<ProfilingCase> ProfilingCase() =>
        (from layers in Gen.Choose(1, 3)
         from experts in Gen.Choose(1, 12)
         from devices in Gen.Elements(Enumerable.Range(1, experts).Where(p => experts % p == 0).ToArray())
         from k in Gen.Choose(1, experts / devices)
         from tokens in Gen.Choose(0, 40)
         from seed in RouterGen.Seed
         select new ProfilingCase(layers, experts, k, devices, tokens, seed)).ToArbitrary();
}

/// <summary>C2R profiling: the collaboration matrix, its lists, their tensors, and the co-located placement.</summary>
public class CollaborationProfilerTests
{
    private static CollaborationProfiler Profile(ProfilingCase c, int[][][] sets)
    {
        var profiler = new CollaborationProfiler(c.Layers, c.Experts);
        for (int l = 0; l < c.Layers; l++)
            foreach (var s in sets[l]) profiler.Record(l, s);
        return profiler;
    }

    [Property(Arbitrary = [typeof(ProfilingArbitraries)], MaxTest = 300)]
    public void MatrixCountsPairsAndListsSortItsRows(ProfilingCase c)
    {
        var sets = c.Sets();
        var profiler = Profile(c, sets);
        for (int l = 0; l < c.Layers; l++)
        {
            Assert.Equal(c.Tokens, profiler.TokensSeen(l));
            var p = profiler.Profile(l);
            for (int i = 0; i < c.Experts; i++)
                for (int j = 0; j < c.Experts; j++)
                {
                    long both = sets[l].Count(s => s.Contains(i) && s.Contains(j));
                    Assert.Equal(i == j ? -1 : both, p[i, j]);                       // C[i,j] = #{t : i, j ∈ S_t}, diagonal −1
                }
            for (int i = 0; i < c.Experts; i++)
            {
                var list = p.Lists[i];
                Assert.Equal(Enumerable.Range(0, c.Experts).Where(j => j != i), list.Order());
                for (int a = 1; a < list.Length; a++)                                 // C[i,·] descending, ties lower index
                    Assert.True(p[i, list[a - 1]] > p[i, list[a]] || (p[i, list[a - 1]] == p[i, list[a]] && list[a - 1] < list[a]));
            }
        }
    }

    [Property(Arbitrary = [typeof(ProfilingArbitraries)], MaxTest = 150)]
    public void ProfilesRoundTripThroughTensorsAndSafetensors(ProfilingCase c)
    {
        var profiler = Profile(c, c.Sets());
        var tensors = profiler.ToTensors("model.c2r.");
        Assert.Equal(2 * c.Layers, tensors.Count);
        Assert.All(tensors.Values, t => Assert.Equal(DType.Int64, t.DType));

        string path = Path.Combine(Path.GetTempPath(), $"c2r-{Environment.ProcessId}-{c.Seed}.safetensors");
        try
        {
            TensorIO.Save(path, tensors);
            var loaded = TensorIO.Load(path);
            for (int l = 0; l < c.Layers; l++)
            {
                var original = profiler.Profile(l);
                var (placement, coLocated) = original.CoLocate(c.Devices);
                foreach (var p in new[] { original, coLocated })
                {
                    var back = CollaborationProfile.FromTensors(p.ToTensors("x."), "x.");
                    Assert.Equal(p.Matrix, back.Matrix);
                    Assert.Equal(p.Lists, back.Lists);
                }
                var fromFile = CollaborationProfile.FromTensors(loaded, $"model.c2r.{l}.");
                Assert.Equal(original.Matrix, fromFile.Matrix);
                Assert.Equal(original.Lists, fromFile.Lists);

                // Without the lists, they are sorted again from the matrix.
                var matrixOnly = new Dictionary<string, Tensor> { ["collaboration"] = original.ToTensors()["collaboration"] };
                Assert.Equal(original.Lists, CollaborationProfile.FromTensors(matrixOnly).Lists);
            }
        }
        finally { File.Delete(path); }
    }

    [Property(Arbitrary = [typeof(ProfilingArbitraries)], MaxTest = 300)]
    public void CoLocatedPlacementPutsGroupMatesFirstAndKeepsTokensOnOneDevice(ProfilingCase c)
    {
        var sets = c.Sets();
        var profile = Profile(c, sets).Profile(0);
        var (placement, coLocated) = profile.CoLocate(c.Devices);
        int perDevice = c.Experts / c.Devices;
        Assert.Equal(c.Devices, placement.Devices);
        for (int p = 0; p < c.Devices; p++) Assert.Equal(perDevice, placement.ExpertsOn(p).Length);
        Assert.Equal(profile.Matrix, coLocated.Matrix);

        for (int i = 0; i < c.Experts; i++)
        {
            var list = coLocated.Lists[i];
            Assert.All(list.Take(perDevice - 1), j => Assert.Equal(placement.DeviceOf(i), placement.DeviceOf(j)));
            // Both halves keep the order of the original list.
            var original = profile.Lists[i];
            Assert.Equal(original.Where(j => placement.DeviceOf(j) == placement.DeviceOf(i)), list.Take(perDevice - 1));
            Assert.Equal(original.Where(j => placement.DeviceOf(j) != placement.DeviceOf(i)), list.Skip(perDevice - 1));
        }

        // C2R with T = E/P − 1 over the co-located lists: every token's k experts sit on e1's device.
        var router = new C2RRouter(coLocated, new C2ROptions { K = c.K, Candidates = perDevice - 1 });
        var logits = Tensor.Randn(new Shape(c.Tokens, c.Experts), new Rng(c.Seed + 1));
        var plan = router.Route(logits, RoutingContext.SingleDevice(c.Experts));
        plan.Validate();
        for (int t = 0; t < c.Tokens; t++)
            Assert.Single(plan.Expert.Skip(t * c.K).Take(c.K).Select(placement.DeviceOf).Distinct());

        // Deterministic: the same profile gives the same placement.
        Assert.Equal(placement.ToArray(), profile.CoLocate(c.Devices).Placement.ToArray());
    }

    [Fact]
    public void GreedyClusteringRecoversPlantedGroups()
    {
        // 8 experts in two hidden teams {1, 4, 6, 7} and {0, 2, 3, 5}; tokens only ever pick pairs within a team.
        int[][] teams = [[1, 4, 6, 7], [0, 2, 3, 5]];
        var profiler = new CollaborationProfiler(1, 8);
        var rng = new Rng(5);
        for (int t = 0; t < 400; t++)
        {
            var team = teams[rng.NextInt(2)];
            int a = team[rng.NextInt(4)], b;
            do b = team[rng.NextInt(4)]; while (b == a);
            profiler.Record(0, [a, b]);
        }
        var (placement, _) = profiler.Profile(0).CoLocate(2);
        foreach (var team in teams)
            Assert.Single(team.Select(placement.DeviceOf).Distinct());
    }

    [Fact]
    public void ProfilingALayerAndRoutingItWithC2R()
    {
        // The offline workflow: run a layer over profiling data, record its plans, build C2R from the profile.
        // With T = E − 1 C2R picks what the profiled top-k router picked; with co-located lists and T = E/P − 1
        // every token stays on one device.
        const int experts = 8, k = 2, devices = 2;
        var layer = new MoeLayer(12, 16, new SoftmaxTopKTestRouter(experts, k), new Rng(1), 0.3);
        var profiler = new CollaborationProfiler(1, experts);
        var rng = new Rng(2);
        for (int batch = 0; batch < 5; batch++)
        {
            layer.Forward(Tensor.Randn(new Shape(32, 12), rng));
            profiler.Record(0, layer.LastPlan!);
        }
        Assert.Equal(160, profiler.TokensSeen(0));

        var x = Tensor.Randn(new Shape(20, 12), rng);
        layer.Forward(x);
        var topK = layer.LastPlan!.Expert;
        var profile = profiler.Profile(0);
        layer.Router = new C2RRouter(profile, new C2ROptions { K = k, Candidates = experts - 1 });
        layer.Forward(x);
        Assert.Equal(topK, layer.LastPlan!.Expert);

        var (placement, coLocated) = profile.CoLocate(devices);
        layer.Router = new C2RRouter(coLocated, new C2ROptions { K = k, Candidates = experts / devices - 1 });
        layer.Placement = placement;
        layer.Forward(x);
        var plan = layer.LastPlan!;
        for (int t = 0; t < plan.Tokens; t++)
            Assert.Equal(placement.DeviceOf(plan.Expert[t * k]), placement.DeviceOf(plan.Expert[t * k + 1]));
    }

    [Fact]
    public void PlansContributeTheirPrimaryPairs()
    {
        // Token 0: primary 0 and 2 (2 dropped for capacity: still selected). Token 1: primary 1 and a fill-in 3.
        var plan = new RoutingPlan(2, 4, 2, [0, 2, 1, 3], Tensor.FromArray([0.5, 0, 0.7, 0.2], 2, 2),
            dropped: [false, true, false, false], slot: [0, -1, 0, 0],
            kind: [PairKind.Primary, PairKind.Primary, PairKind.Primary, PairKind.FillIn], capacity: 1);
        var profiler = new CollaborationProfiler(1, 4);
        profiler.Record(0, plan);
        var p = profiler.Profile(0);
        Assert.Equal(1, p[0, 2]);
        Assert.Equal(1, p[2, 0]);
        Assert.Equal(0, p[1, 3]);
        Assert.Equal(2, profiler.TokensSeen(0));
    }

    [Fact]
    public void BadInputsAreRejected()
    {
        var profiler = new CollaborationProfiler(2, 4);
        Assert.Throws<ArgumentOutOfRangeException>(() => profiler.Record(2, [0]));
        Assert.Contains("outside [0, 4)", Assert.Throws<ArgumentException>(() => profiler.Record(0, [4])).Message);
        Assert.Contains("twice", Assert.Throws<ArgumentException>(() => profiler.Record(0, [1, 1])).Message);
        Assert.Contains("layers", Assert.Throws<ArgumentException>(() => new CollaborationProfiler(0, 4)).Message);
        Assert.Contains("devices = 3", Assert.Throws<ArgumentException>(() => profiler.Profile(0).CoLocate(3)).Message);
        Assert.Throws<KeyNotFoundException>(() => CollaborationProfile.FromTensors(new Dictionary<string, Tensor>()));
    }
}
