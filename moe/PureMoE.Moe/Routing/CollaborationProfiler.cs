// Collaboration profiling for C2R (arXiv 2504.01337; ROUTERS.md §4).
//
// Run a trained model over profiling data and, per MoE layer, for every token with selected set S:
//
//   C[i, j] += 1   for all i, j ∈ S            (the diagonal counts each expert's load along the way)
//
// then set the diagonal to −1 (an expert is not its own collaborator) and list, for each expert i,
//
//   List(i) = the other experts sorted by C[i, ·] descending, ties by lower expert index.
//
// C and the lists are computed once, offline, and stored with the model: ToTensors/FromTensors give them as
// int64 tensors "{prefix}collaboration" [E, E] and "{prefix}candidates" [E, E − 1].
//
// Co-located placement (the last bullet of §4): split each layer's E experts into P groups of E/P that work
// together, put group p on device p, and reorder each list with the expert's group mates first, so that C2R with
// T = E/P − 1 keeps a token's k experts on one device. Deterministic greedy clustering, with the symmetric affinity
// A[i, j] = C[i, j] + C[j, i] (i ≠ j):
//
//   repeat P times:
//     seed  = the remaining expert with the largest total affinity Σ_j A[seed, j]   (all j; ties: lower index)
//     group = {seed}
//     while |group| < E/P:
//       add the remaining expert j with the largest Σ_{g ∈ group} A[g, j]           (ties: lower index)

using PureMoE.Moe.Parallel;

namespace PureMoE.Moe.Routing;

/// <summary>
/// Accumulates C2R collaboration matrices for a model's MoE layers from routing plans (or expert sets) over a run
/// of profiling data, and produces each layer's <see cref="CollaborationProfile"/>.
/// </summary>
public sealed class CollaborationProfiler
{
    private readonly long[][] _counts;       // per layer, C [E·E] row-major, diagonal = load (before the −1)
    private readonly long[] _tokens;

    /// <summary>A profiler for <paramref name="layers"/> MoE layers of <paramref name="experts"/> experts each.</summary>
    public CollaborationProfiler(int layers, int experts)
    {
        if (layers < 1) throw new ArgumentException($"CollaborationProfiler: layers must be ≥ 1, got {layers}", nameof(layers));
        if (experts < 1) throw new ArgumentException($"CollaborationProfiler: experts must be ≥ 1, got {experts}", nameof(experts));
        Layers = layers;
        Experts = experts;
        _counts = Enumerable.Range(0, layers).Select(_ => new long[experts * experts]).ToArray();
        _tokens = new long[layers];
    }

    /// <summary>Number of MoE layers.</summary>
    public int Layers { get; }

    /// <summary>Experts per layer E.</summary>
    public int Experts { get; }

    /// <summary>Tokens recorded for <paramref name="layer"/>.</summary>
    public long TokensSeen(int layer) => _tokens[CheckLayer(layer)];

    /// <summary>
    /// Records every token of <paramref name="plan"/> for <paramref name="layer"/>. A token's selected set S is its
    /// <see cref="PairKind.Primary"/> pairs: the router's own choice, including pairs later dropped for capacity,
    /// excluding Rectify's fill-ins and rectified pairs.
    /// </summary>
    public void Record(int layer, RoutingPlan plan)
    {
        CheckLayer(layer);
        if (plan.Experts != Experts)
            throw new ArgumentException($"CollaborationProfiler: plan has E = {plan.Experts}, the profiler {Experts}");
        int m = plan.SlotsPerToken;
        var selected = new List<int>(m);
        for (int t = 0; t < plan.Tokens; t++)
        {
            selected.Clear();
            for (int j = 0; j < m; j++)
            {
                int i = t * m + j;
                if (plan.Expert[i] >= 0 && plan.Kind[i] == PairKind.Primary) selected.Add(plan.Expert[i]);
            }
            Record(layer, selected);
        }
    }

    /// <summary>Records one token of <paramref name="layer"/> whose selected set is <paramref name="selected"/> (distinct experts).</summary>
    public void Record(int layer, IReadOnlyList<int> selected)
    {
        var c = _counts[CheckLayer(layer)];
        for (int a = 0; a < selected.Count; a++)
        {
            int i = selected[a];
            if (i < 0 || i >= Experts) throw new ArgumentException($"CollaborationProfiler: expert {i} is outside [0, {Experts})");
            for (int b = 0; b < a; b++)
                if (selected[b] == i) throw new ArgumentException($"CollaborationProfiler: expert {i} appears twice in one token's set");
        }
        foreach (int i in selected)
            foreach (int j in selected)
                c[i * Experts + j]++;
        _tokens[layer]++;
    }

    /// <summary>The profile of <paramref name="layer"/>: C with its diagonal set to −1, and the lists.</summary>
    public CollaborationProfile Profile(int layer)
    {
        var c = (long[])_counts[CheckLayer(layer)].Clone();
        for (int i = 0; i < Experts; i++) c[i * Experts + i] = -1;
        return new CollaborationProfile(Experts, c);
    }

    /// <summary>The profiles of all layers, in layer order.</summary>
    public IReadOnlyList<CollaborationProfile> Profiles() => Enumerable.Range(0, Layers).Select(Profile).ToArray();

    /// <summary>All layers' profiles as tensors, layer l under <c>"{prefix}{l}."</c> (see <see cref="CollaborationProfile.ToTensors"/>).</summary>
    public IReadOnlyDictionary<string, Tensor> ToTensors(string prefix = "c2r.layers.")
    {
        var all = new Dictionary<string, Tensor>();
        for (int l = 0; l < Layers; l++)
            foreach (var (name, t) in Profile(l).ToTensors($"{prefix}{l}.")) all.Add(name, t);
        return all;
    }

    private int CheckLayer(int layer) =>
        layer >= 0 && layer < Layers ? layer : throw new ArgumentOutOfRangeException(nameof(layer), $"CollaborationProfiler: layer {layer} is outside [0, {Layers})");
}

/// <summary>
/// One MoE layer's C2R profile: the collaboration matrix C [E, E] (diagonal −1) and the candidate lists List(i)
/// (E − 1 experts each). The lists are those sorted by C unless a placement reordered them (<see cref="CoLocate"/>).
/// </summary>
public sealed class CollaborationProfile
{
    private readonly long[] _matrix;
    private readonly int[][] _lists;

    /// <summary>A profile from C [E·E] row-major, with the lists sorted by C (<see cref="ListsFromMatrix"/>).</summary>
    public CollaborationProfile(int experts, long[] matrix) : this(experts, matrix, ListsFromMatrix(experts, matrix)) { }

    /// <summary>A profile from C [E·E] and explicit lists (each a permutation of the other E − 1 experts).</summary>
    public CollaborationProfile(int experts, long[] matrix, IReadOnlyList<int[]> lists)
    {
        if (experts < 1) throw new ArgumentException($"CollaborationProfile: experts must be ≥ 1, got {experts}", nameof(experts));
        if (matrix.Length != experts * experts)
            throw new ArgumentException($"CollaborationProfile: matrix has {matrix.Length} entries, expected {experts}x{experts}", nameof(matrix));
        CheckLists(lists, experts, "CollaborationProfile");
        Experts = experts;
        _matrix = (long[])matrix.Clone();
        _lists = lists.Select(l => (int[])l.Clone()).ToArray();
    }

    /// <summary>Experts E.</summary>
    public int Experts { get; }

    /// <summary>C[i, j]: tokens that selected both i and j (−1 on the diagonal).</summary>
    public long this[int i, int j] => _matrix[i * Experts + j];

    /// <summary>A copy of C, row-major [E·E].</summary>
    public long[] Matrix => (long[])_matrix.Clone();

    /// <summary>The candidate lists: Lists[i] = List(i).</summary>
    public IReadOnlyList<int[]> Lists => _lists;

    /// <summary>List(i) = the experts j ≠ i sorted by C[i, j] descending, ties by lower index.</summary>
    public static int[][] ListsFromMatrix(int experts, long[] matrix)
    {
        if (matrix.Length != experts * experts)
            throw new ArgumentException($"CollaborationProfile: matrix has {matrix.Length} entries, expected {experts}x{experts}", nameof(matrix));
        return Enumerable.Range(0, experts).Select(i =>
                Enumerable.Range(0, experts).Where(j => j != i)
                    .OrderByDescending(j => matrix[i * experts + j]).ThenBy(j => j)        // ties: lower expert index first
                    .ToArray())
            .ToArray();
    }

    /// <summary>
    /// This profile as int64 tensors: <c>"{prefix}collaboration"</c> [E, E] (C, diagonal −1) and
    /// <c>"{prefix}candidates"</c> [E, E − 1] (row i = List(i)).
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> ToTensors(string prefix = "")
    {
        var lists = _lists.SelectMany(l => l).Select(e => (long)e).ToArray();
        return new Dictionary<string, Tensor>
        {
            [prefix + "collaboration"] = Tensor.FromArray((long[])_matrix.Clone(), Experts, Experts),
            [prefix + "candidates"] = Tensor.FromArray(lists, Experts, Experts - 1),
        };
    }

    /// <summary>
    /// Reads a profile written by <see cref="ToTensors"/>. The matrix is required; without
    /// <c>"{prefix}candidates"</c> the lists are sorted from the matrix.
    /// </summary>
    public static CollaborationProfile FromTensors(IReadOnlyDictionary<string, Tensor> tensors, string prefix = "")
    {
        string matrixKey = prefix + "collaboration", listsKey = prefix + "candidates";
        if (!tensors.TryGetValue(matrixKey, out var m))
            throw new KeyNotFoundException($"CollaborationProfile: no '{matrixKey}' among the tensors");
        if (m.Rank != 2 || m.Shape[0] != m.Shape[1])
            throw new ArgumentException($"CollaborationProfile: '{matrixKey}' must be square [E, E], got {m.Shape}");
        int experts = m.Shape[0];
        var matrix = m.ToLongArray();
        if (!tensors.TryGetValue(listsKey, out var l)) return new CollaborationProfile(experts, matrix);
        if (l.Shape != new Shape(experts, experts - 1))
            throw new ArgumentException($"CollaborationProfile: '{listsKey}' must be [{experts}, {experts - 1}], got {l.Shape}");
        var flat = l.ToLongArray();
        var lists = Enumerable.Range(0, experts)
            .Select(i => flat.Skip(i * (experts - 1)).Take(experts - 1).Select(e => (int)e).ToArray()).ToArray();
        return new CollaborationProfile(experts, matrix, lists);
    }

    /// <summary>
    /// Clusters the experts into <paramref name="devices"/> groups of E/P by co-activation (the greedy in the header),
    /// puts group p on device p, and returns that placement with this profile's lists reordered: each expert's group
    /// mates first, then the others, both in their original list order. C2R with T = E/P − 1 over these lists
    /// keeps each token on one device.
    /// </summary>
    public (ExpertPlacement Placement, CollaborationProfile Profile) CoLocate(int devices)
    {
        if (devices < 1 || Experts % devices != 0)
            throw new ArgumentException($"CollaborationProfile.CoLocate: devices = {devices} must divide E = {Experts}", nameof(devices));
        int e = Experts, perDevice = e / devices;
        long Affinity(int i, int j) => i == j ? 0 : _matrix[i * e + j] + _matrix[j * e + i];

        var deviceOf = new int[e];
        var remaining = new SortedSet<int>(Enumerable.Range(0, e));
        for (int p = 0; p < devices; p++)
        {
            // Seed: the heaviest collaborator left (total affinity over all experts). ArgMax keeps the lowest index on ties.
            int seed = ArgMax(remaining, j => Enumerable.Range(0, e).Sum(o => Affinity(j, o)));
            var group = new List<int> { seed };
            remaining.Remove(seed);
            while (group.Count < perDevice)
            {
                int next = ArgMax(remaining, j => group.Sum(g => Affinity(g, j)));
                group.Add(next);
                remaining.Remove(next);
            }
            foreach (int g in group) deviceOf[g] = p;
        }
        var placement = new ExpertPlacement(deviceOf, devices);

        var lists = Enumerable.Range(0, e).Select(i =>
                _lists[i].Where(j => deviceOf[j] == deviceOf[i])
                    .Concat(_lists[i].Where(j => deviceOf[j] != deviceOf[i]))
                    .ToArray())
            .ToArray();
        return (placement, new CollaborationProfile(e, _matrix, lists));
    }

    private static int ArgMax(IEnumerable<int> experts, Func<int, long> value)
    {
        int best = -1;
        long bestValue = long.MinValue;
        foreach (int j in experts)                 // ascending, so a strict > keeps the lowest index on ties
        {
            long v = value(j);
            if (v > bestValue) { best = j; bestValue = v; }
        }
        return best;
    }

    /// <summary>Throws unless <paramref name="lists"/> has one list per expert, each a permutation of the other E − 1 experts.</summary>
    internal static void CheckLists(IReadOnlyList<int[]> lists, int experts, string who)
    {
        if (lists.Count != experts)
            throw new ArgumentException($"{who}: {lists.Count} candidate lists, expected one per expert ({experts})");
        var seen = new bool[experts];
        for (int i = 0; i < experts; i++)
        {
            var list = lists[i];
            if (list.Length != experts - 1)
                throw new ArgumentException($"{who}: List({i}) has {list.Length} entries, expected the other {experts - 1} experts");
            Array.Clear(seen);
            seen[i] = true;
            foreach (int j in list)
            {
                if (j < 0 || j >= experts || seen[j])
                    throw new ArgumentException($"{who}: List({i}) = [{string.Join(",", list)}] must be a permutation of the experts other than {i}");
                seen[j] = true;
            }
        }
    }
}
