// C2R: collaboration-constrained routing (arXiv 2504.01337; ROUTERS.md §4).
//
// Offline, per MoE layer, a collaboration matrix C [E, E] counts how often two experts served the same token
// (C[i,j] += 1 for all i, j in a token's selected set S; diagonal set to −1), and each expert i gets a candidate
// list List(i) = the other experts sorted by C[i,·] descending (ties: lower expert index first). See
// CollaborationProfiler.
//
// Routing of token t with scores s_t [E]:
//
//   e1      = argmax_e s_te                                     (ties: lower index)
//   cand    = first T entries of List(e1)                       (K − 1 ≤ T ≤ E − 1)
//   others  = the k − 1 best-scoring experts in cand            (ties: lower index)
//   experts = {e1} ∪ others, ordered by score descending        (so the slots line up with top-k's)
//
// With T = E − 1 the candidates are all other experts, and the plan is exactly vanilla top-k of the scores.
// A smaller T keeps a token's experts among e1's habitual collaborators; with a placement that co-locates
// collaborators, the token's experts sit on few devices and the exchange sends it to fewer of them.
//
// Gate weights (option):
//   FullSoftmax     (Qwen-MoE, default)  scores p = softmax(l) over all E;  w_te = p_te, not renormalised (Σ ≤ 1).
//   SelectedSoftmax (LLaMA-MoE)          scores l;  w_t = scale · softmax(l_t over the k selected experts).
// Gradients reach W_r through the weights only; the choice of experts carries none. No auxiliary loss.

namespace PureMoE.Moe.Routing;

/// <summary>How C2R turns the selected experts' scores into gate weights.</summary>
public enum C2RWeighting
{
    /// <summary>Qwen-MoE: full-softmax probabilities of the selected experts, not renormalised (default).</summary>
    FullSoftmax,
    /// <summary>LLaMA-MoE: softmax over the k selected logits, times <see cref="C2ROptions.SelectedScale"/>.</summary>
    SelectedSoftmax,
}

/// <summary>Settings of the C2R router.</summary>
public sealed record C2ROptions
{
    /// <summary>Experts per token k (≥ 1).</summary>
    public int K { get; init; } = 2;

    /// <summary>Candidates T: how many entries of List(e1) the other k − 1 experts are chosen from (K − 1 ≤ T ≤ E − 1).</summary>
    public int Candidates { get; init; } = 1;

    /// <summary>The weight variant (default <see cref="C2RWeighting.FullSoftmax"/>).</summary>
    public C2RWeighting Weighting { get; init; } = C2RWeighting.FullSoftmax;

    /// <summary>Scale of the <see cref="C2RWeighting.SelectedSoftmax"/> weights (default 1; finite, &gt; 0).</summary>
    public double SelectedScale { get; init; } = 1.0;
}

/// <summary>
/// The C2R router: top-1 by score, then the other k − 1 experts from the first T collaborators of that expert.
/// Dropless; plans have m = k slots, in descending score order.
/// </summary>
public sealed class C2RRouter : IRouter
{
    private readonly int[][] _lists;

    /// <summary>
    /// Creates a router over <paramref name="experts"/> experts with one candidate list per expert:
    /// <paramref name="candidateLists"/>[i] = List(i), the other E − 1 experts, most collaborative first.
    /// </summary>
    public C2RRouter(int experts, C2ROptions options, IReadOnlyList<int[]> candidateLists)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (experts < 1) throw new ArgumentException($"C2RRouter: Experts must be ≥ 1, got {experts}", nameof(experts));
        if (options.K < 1 || options.K > experts)
            throw new ArgumentException($"C2RRouter: K = {options.K} must lie in [1, {experts}] (E = {experts})", nameof(options));
        if (options.Candidates < options.K - 1 || options.Candidates > experts - 1)
            throw new ArgumentException(
                $"C2RRouter: Candidates (T) = {options.Candidates} must lie in [K − 1, E − 1] = [{options.K - 1}, {experts - 1}]", nameof(options));
        if (!double.IsFinite(options.SelectedScale) || options.SelectedScale <= 0)
            throw new ArgumentException($"C2RRouter: SelectedScale = {options.SelectedScale} must be finite and > 0", nameof(options));
        if (options.Weighting == C2RWeighting.SelectedSoftmax && options.K == 1)
            throw new ArgumentException(
                "C2RRouter: Weighting = SelectedSoftmax with K = 1 gives every token weight SelectedScale and the router no gradient", nameof(options));
        if (!Enum.IsDefined(options.Weighting))
            throw new ArgumentException($"C2RRouter: Weighting = {options.Weighting} is not a C2RWeighting", nameof(options));
        CollaborationProfile.CheckLists(candidateLists, experts, "C2RRouter");
        Experts = experts;
        Options = options;
        _lists = candidateLists.Select(l => (int[])l.Clone()).ToArray();
    }

    /// <summary>Creates a router whose candidate lists are those of a layer's collaboration profile.</summary>
    public C2RRouter(CollaborationProfile profile, C2ROptions options)
        : this(profile.Experts, options, profile.Lists) { }

    /// <inheritdoc />
    public string Name => "c2r";

    /// <inheritdoc />
    public int Experts { get; }

    /// <summary>The options.</summary>
    public C2ROptions Options { get; }

    /// <summary>List(i): the candidate list of expert i (a copy).</summary>
    public int[] CandidateList(int expert) => (int[])_lists[expert].Clone();

    /// <inheritdoc />
    public RoutingPlan Route(Tensor logits, RoutingContext context)
    {
        if (logits.Rank != 2 || logits.Shape[1] != Experts)
            throw new ArgumentException($"C2RRouter: logits {logits.Shape} must be [T, {Experts}]");
        int tokens = logits.Shape[0], k = Options.K;

        // The scores the experts are chosen by: probabilities for the Qwen variant, logits for LLaMA-MoE. Softmax
        // is monotone, so both pick the same experts up to rounding; choosing on the weights' own scores keeps
        // "T = E − 1 equals top-k" exact in either variant.
        var probabilities = Options.Weighting == C2RWeighting.FullSoftmax ? logits.Softmax(-1) : null;
        var scores = probabilities ?? logits;
        double[] s = scores.ToDoubleArray();

        var expert = new int[tokens * k];
        for (int t = 0; t < tokens; t++)
            Choose(new ReadOnlySpan<double>(s, t * Experts, Experts), expert.AsSpan(t * k, k));

        var chosen = Tensor.FromHost(expert.Select(e => (long)e).ToArray(), [tokens, k], logits.Device);
        var weights = probabilities is not null
            ? probabilities.Gather(-1, chosen)                                                    // p_te, Σ ≤ 1
            : logits.Gather(-1, chosen).Softmax(-1).MulScalar(Options.SelectedScale);             // scale · softmax over k
        return new RoutingPlan(tokens, Experts, k, expert, weights);
    }

    /// <summary>
    /// The experts of one token with scores <paramref name="score"/>: e1 = argmax, then the k − 1 best-scoring
    /// among the first T entries of List(e1); written to <paramref name="chosen"/> in descending score order
    /// (ties: lower index first, as <see cref="Tensor.TopK"/>).
    /// </summary>
    public void Choose(ReadOnlySpan<double> score, Span<int> chosen)
    {
        if (score.Length != Experts || chosen.Length != Options.K)
            throw new ArgumentException($"C2RRouter.Choose: {score.Length} scores and {chosen.Length} slots, expected {Experts} and {Options.K}");
        int e1 = 0;
        for (int e = 1; e < score.Length; e++)
            if (Better(score, e, e1)) e1 = e;
        chosen[0] = e1;

        // Insertion of the candidates into a best-first list of length k − 1: k and T are small.
        var candidates = new ReadOnlySpan<int>(_lists[e1], 0, Options.Candidates);
        var others = chosen[1..];
        int filled = 0;
        foreach (int c in candidates)
        {
            int at = filled;
            while (at > 0 && Better(score, c, others[at - 1])) at--;
            if (at >= others.Length) continue;
            for (int j = Math.Min(filled, others.Length - 1); j > at; j--) others[j] = others[j - 1];
            others[at] = c;
            if (filled < others.Length) filled++;
        }
    }

    /// <summary>a ranks before b: higher score, or equal score and lower index (NaN ranks last).</summary>
    private static bool Better(ReadOnlySpan<double> score, int a, int b)
    {
        double sa = score[a], sb = score[b];
        if (double.IsNaN(sb)) return !double.IsNaN(sa) || a < b;
        if (double.IsNaN(sa)) return false;
        return sa > sb || (sa == sb && a < b);
    }
}
