namespace PureMoE.Models;

/// <summary>Choosing the next token from a row of logits (on the host: one row of vocab values per step).</summary>
public static class Sampling
{
    /// <summary>
    /// The index of the largest logit when <paramref name="temperature"/> ≤ 0; otherwise a draw from
    /// softmax(logits / temperature) restricted to the top-p nucleus: the most likely tokens, in order, until their
    /// probability reaches <paramref name="topP"/> (the token that crosses it included).
    /// </summary>
    public static long Sample(ReadOnlySpan<double> logits, double temperature, double topP, Rng rng)
    {
        if (logits.Length == 0) throw new ArgumentException("Sample: empty logits");
        if (temperature <= 0) return ArgMax(logits);

        // Softmax with the max subtracted, for stability.
        double max = logits[(int)ArgMax(logits)];
        var probs = new double[logits.Length];
        double sum = 0;
        for (int i = 0; i < probs.Length; i++) sum += probs[i] = Math.Exp((logits[i] - max) / temperature);
        for (int i = 0; i < probs.Length; i++) probs[i] /= sum;

        // Nucleus: most likely first, ties by lower index. That is a total order, so any sort gives the one order. The
        // nucleus is a prefix of it, so only tokens at or above a cut-off whose tokens hold ≥ topP of the mass need
        // sorting: every token below the cut-off comes after all of them. Halving from the largest probability finds
        // one in a few passes; (1 − topP)/V always works (the tokens below it hold less than V of it).
        double floor = (1 - topP) / probs.Length, cut = 1.0;
        while (cut > floor && MassAtOrAbove(probs, cut) < topP) cut /= 2;
        cut = Math.Max(cut, floor);
        var order = new List<Candidate>();
        for (int i = 0; i < probs.Length; i++)
            if (probs[i] >= cut) order.Add(new Candidate(probs[i], i));
        order.Sort(MostLikelyFirst.Instance);
        int keep = 0;
        double mass = 0;
        while (keep < order.Count && (keep == 0 || mass < topP)) mass += order[keep++].P;

        double u = rng.NextDouble() * mass;
        for (int j = 0; j < keep; j++)
        {
            u -= order[j].P;
            if (u < 0) return order[j].Index;
        }
        return order[keep - 1].Index;   // rounding left u at a hair above zero
    }

    private static double MassAtOrAbove(double[] probs, double cut)
    {
        double mass = 0;
        foreach (double p in probs) if (p >= cut) mass += p;
        return mass;
    }

    private readonly record struct Candidate(double P, int Index);

    private sealed class MostLikelyFirst : IComparer<Candidate>
    {
        public static readonly MostLikelyFirst Instance = new();

        public int Compare(Candidate a, Candidate b) => a.P != b.P ? b.P.CompareTo(a.P) : a.Index.CompareTo(b.Index);
    }

    /// <summary>Index of the largest value (the first one on ties).</summary>
    public static long ArgMax(ReadOnlySpan<double> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}
