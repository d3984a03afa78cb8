using PureMoE.Moe.Routing;
using Xunit;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>
/// <see cref="Capacity.Place"/> (a counting sort by expert, a sort of index arrays) against the placement written
/// the obvious way (per expert a LINQ stable ordering and a set of the kept pairs): the same drops and slots, with
/// many ties of priority, both drop policies, offsets from earlier placements, and experts asked by nobody.
/// </summary>
public sealed class CapacityPlaceTests
{
    private static (bool[] Dropped, int[] Slot) Obvious(PairCandidate[] candidates, int experts, int capacity, int[] firstFree, DropPolicy policy, int pairs)
    {
        var dropped = new bool[pairs];
        var slot = Enumerable.Repeat(-7, pairs).ToArray();
        for (int e = 0; e < experts; e++)
        {
            var asking = candidates.Where(c => c.Expert == e).ToList();
            int free = Math.Max(0, capacity - firstFree[e]);
            IEnumerable<PairCandidate> admitted = asking.Count <= free ? asking
                : policy == DropPolicy.Position ? asking.Take(free)
                : asking.OrderByDescending(c => c.Priority).ThenBy(c => c.Token).Take(free);
            var kept = admitted.Select(c => c.Pair).ToHashSet();
            int next = firstFree[e];
            foreach (var c in asking)
            {
                dropped[c.Pair] = !kept.Contains(c.Pair);
                slot[c.Pair] = kept.Contains(c.Pair) ? next++ : -1;
            }
        }
        return (dropped, slot);
    }

    [Theory]
    [InlineData(1, 1, 1, 1)]
    [InlineData(64, 8, 2, 2)]
    [InlineData(300, 8, 2, 3)]
    [InlineData(1000, 16, 3, 4)]
    [InlineData(257, 5, 1, 5)]
    public void MatchesTheObviousPlacement(int tokens, int experts, int k, int seed)
    {
        var r = new Random(seed);
        foreach (var policy in new[] { DropPolicy.Probs, DropPolicy.Position })
            foreach (double capacityFactor in new[] { 0.3, 0.75, 1.0, 2.0 })
            {
                // k distinct experts per token (some experts unwanted), priorities from a few values: ties are common.
                var candidates = new List<PairCandidate>();
                for (int t = 0; t < tokens; t++)
                    foreach (int e in Enumerable.Range(0, experts).OrderBy(_ => r.Next()).Take(k).Select(e => e % Math.Max(1, experts - 1)).Distinct())
                        candidates.Add(new PairCandidate(t * k + candidates.Count(c => c.Token == t), t, e, r.Next(4) * 0.25));
                int capacity = Capacity.Of(tokens, k, experts, capacityFactor);
                var firstFree = Enumerable.Range(0, experts).Select(_ => r.Next(3) == 0 ? r.Next(capacity + 2) : 0).ToArray();
                int pairs = tokens * k;
                var expected = Obvious([.. candidates], experts, capacity, firstFree, policy, pairs);
                var dropped = new bool[pairs];
                var slot = Enumerable.Repeat(-7, pairs).ToArray();
                Capacity.Place(candidates, experts, capacity, (int[])firstFree.Clone(), policy, dropped, slot);
                Assert.Equal(expected.Dropped, dropped);
                Assert.Equal(expected.Slot, slot);
            }
    }
}
