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

        // Nucleus: most likely first (ties by lower index, so the order is deterministic).
        var order = Enumerable.Range(0, probs.Length).OrderByDescending(i => probs[i]).ThenBy(i => i).ToArray();
        int keep = 0;
        double mass = 0;
        while (keep < order.Length && (keep == 0 || mass < topP)) mass += probs[order[keep++]];

        double u = rng.NextDouble() * mass;
        for (int j = 0; j < keep; j++)
        {
            u -= probs[order[j]];
            if (u < 0) return order[j];
        }
        return order[keep - 1];   // rounding left u at a hair above zero
    }

    /// <summary>Index of the largest value (the first one on ties).</summary>
    public static long ArgMax(ReadOnlySpan<double> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}
