// Pieces shared by the capacity-based routers (TopK, Rectify): the capacity of an expert, the placement of
// candidate (token, expert) pairs into expert buffers with dropping, and the two router regularisers.
//
//   Capacity        C = ceil(T·k/E · CF)                       (T tokens of one source device, k choices each)
//   Placement       expert e has C − offset_e free slots; if more candidates want e, keep the best by a
//                   priority (highest first, ties: lower token index first) or the first in token order;
//                   kept pairs take slots offset_e, offset_e + 1, … in token order; the others are dropped.
//   Aux loss        a · E/(k·T²) · Σ_e (Σ_t s_te) · count_e    (s: full softmax; count_e: pairs before dropping)
//   z-loss          z · mean_t (logsumexp_e l_te)²
//
// Decisions (which pairs are kept, which slot) are integer work on the host, T·k of it; they carry no gradient.

namespace PureMoE.Moe.Routing;

/// <summary>How an over-subscribed expert chooses which pairs to keep.</summary>
public enum DropPolicy
{
    /// <summary>Keep the C pairs with the highest score for that expert (ties: lower token index first).</summary>
    Probs,
    /// <summary>Keep the first C pairs in token order.</summary>
    Position,
}

/// <summary>One (token, expert) pair that asks for a place in its expert's buffer.</summary>
/// <param name="Pair">Flat index t·m + j of the pair in the plan.</param>
/// <param name="Token">The token t.</param>
/// <param name="Expert">The expert asked for.</param>
/// <param name="Priority">Higher is kept first under <see cref="DropPolicy.Probs"/> (ignored under Position).</param>
public readonly record struct PairCandidate(int Pair, int Token, int Expert, double Priority);

/// <summary>Expert capacity and the placement of pairs into capacity buffers.</summary>
public static class Capacity
{
    /// <summary>
    /// C = ceil(T·k/E · CF): the rows one expert may take from the <paramref name="tokens"/> tokens of one source
    /// device when each token makes <paramref name="choices"/> choices among <paramref name="experts"/> experts.
    /// </summary>
    public static int Of(int tokens, int choices, int experts, double capacityFactor)
    {
        if (capacityFactor <= 0 || !double.IsFinite(capacityFactor))
            throw new ArgumentException($"Capacity: CapacityFactor = {capacityFactor} must be a finite number > 0");
        // Left to right as written: (T·k)/E first, then ·CF. Keeping one evaluation order matters, since the
        // Rectify reduction property compares two routers' capacities bit for bit.
        return (int)Math.Ceiling((double)tokens * choices / experts * capacityFactor);
    }

    /// <summary>
    /// Places <paramref name="candidates"/> (given in flat pair order, i.e. token order) into the buffers of
    /// capacity <paramref name="capacity"/>. Expert e's free slots start at <paramref name="firstFreeSlot"/>[e]
    /// (0 for first choices; Rectify's fill-ins start after all first choices). Writes
    /// <paramref name="dropped"/>[pair] and <paramref name="slot"/>[pair] for every candidate.
    /// </summary>
    public static void Place(IReadOnlyList<PairCandidate> candidates, int experts, int capacity, int[] firstFreeSlot,
        DropPolicy policy, bool[] dropped, int[] slot)
    {
        // The candidates of each expert, by their position in the input (token order): a counting sort.
        int n = candidates.Count;
        var start = new int[experts + 1];
        for (int i = 0; i < n; i++) start[candidates[i].Expert + 1]++;
        for (int e = 0; e < experts; e++) start[e + 1] += start[e];
        var byExpert = new int[n];
        var fill = start[..experts];
        for (int i = 0; i < n; i++) byExpert[fill[candidates[i].Expert]++] = i;

        var kept = new bool[n];
        for (int e = 0; e < experts; e++)
        {
            var asking = byExpert.AsSpan(start[e], start[e + 1] - start[e]);
            int free = Math.Max(0, capacity - firstFreeSlot[e]);

            // Which pairs get in: all of them when they fit, else the first in token order, or the best by
            // priority (highest first; ties: lower token, then input order — what a stable sort gives).
            if (asking.Length <= free || policy == DropPolicy.Position)
            {
                foreach (int i in asking[..Math.Min(free, asking.Length)]) kept[i] = true;
            }
            else
            {
                var ranked = new Rank[asking.Length];
                for (int j = 0; j < ranked.Length; j++)
                {
                    var c = candidates[asking[j]];
                    ranked[j] = new Rank(c.Priority, c.Token, asking[j]);
                }
                Array.Sort(ranked);
                for (int j = 0; j < free; j++) kept[ranked[j].Index] = true;
            }

            // Slots: the kept pairs in token order take the free slots one after another; the rest are dropped.
            int next = firstFreeSlot[e];
            foreach (int i in asking)
            {
                int pair = candidates[i].Pair;
                dropped[pair] = !kept[i];
                slot[pair] = kept[i] ? next++ : -1;
            }
        }
    }

    /// <summary>A candidate's place in the priority order: highest priority first, then lower token, then input order.</summary>
    private readonly record struct Rank(double Priority, int Token, int Index) : IComparable<Rank>
    {
        public int CompareTo(Rank other)
        {
            int c = other.Priority.CompareTo(Priority);
            if (c == 0) c = Token.CompareTo(other.Token);
            return c != 0 ? c : Index.CompareTo(other.Index);
        }
    }

    /// <summary>How many of <paramref name="candidates"/> ask for each expert (the counts before dropping).</summary>
    public static int[] CountPerExpert(IEnumerable<PairCandidate> candidates, int experts)
    {
        var counts = new int[experts];
        foreach (var c in candidates) counts[c.Expert]++;
        return counts;
    }
}

/// <summary>The router regularisers shared by the softmax routers.</summary>
public static class RouterLosses
{
    /// <summary>
    /// Load-balancing loss a · E/(k·T²) · Σ_e (Σ_t s_te) · count_e, with s = <paramref name="probabilities"/> the
    /// full softmax [T, E] and count_e the pairs per expert before dropping (a constant: no gradient). Equals a
    /// when routing is perfectly uniform (s_te = 1/E, or counts T·k/E with Σ_t s_te = T/E).
    /// </summary>
    public static Tensor Aux(Tensor probabilities, int[] countPerExpert, int k, double coefficient)
    {
        int tokens = probabilities.Shape[0], experts = probabilities.Shape[1];
        var counts = HostRead.Constant(countPerExpert.Select(c => (double)c).ToArray(), [experts], probabilities);
        var probabilityMass = probabilities.Sum(0);                                  // Σ_t s_te, [E]
        double scale = coefficient * experts / ((double)k * tokens * tokens);
        return probabilityMass.Mul(counts).Sum().MulScalar(scale);
    }

    /// <summary>z-loss z · mean_t (logsumexp_e l_te)² of router logits [T, E].</summary>
    public static Tensor Z(Tensor logits, double coefficient) =>
        logits.LogSumExp(-1).Square().Mean().MulScalar(coefficient);
}

/// <summary>Argument checks shared by the routers' Route methods.</summary>
internal static class RouterChecks
{
    /// <summary>Logits must be a floating-point [T, E] matrix and the placement must cover the router's E experts.</summary>
    public static void CheckInputs(string router, Tensor logits, RoutingContext context, int experts)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(context);
        if (logits.Rank != 2 || logits.Shape[1] != experts)
            throw new ArgumentException($"{router}: logits {logits.Shape} must be [tokens, {experts}]");
        if (!logits.DType.IsFloatingPoint())
            throw new ArgumentException($"{router}: logits must be floating point, got {logits.DType.Name()}");
        if (context.Placement.Experts != experts)
            throw new ArgumentException($"{router}: context.Placement covers {context.Placement.Experts} experts ({context.Placement}), the router has {experts}");
        if (context.SourceDevice < 0 || context.SourceDevice >= context.Placement.Devices)
            throw new ArgumentException($"{router}: context.SourceDevice = {context.SourceDevice} is outside [0, {context.Placement.Devices}) of {context.Placement}");
    }
}
