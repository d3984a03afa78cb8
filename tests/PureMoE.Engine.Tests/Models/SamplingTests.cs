using PureMoE.Models;

namespace PureMoE.Engine.Tests.Models;

public class SamplingTests
{
    // The nucleus exactly as specified: sort every token (probability descending, lower index first on ties), keep the
    // prefix whose mass first reaches topP, draw from it.
    private static long Reference(double[] logits, double temperature, double topP, Rng rng)
    {
        double max = logits.Max();
        var probs = logits.Select(l => Math.Exp((l - max) / temperature)).ToArray();
        double sum = 0;
        foreach (double p in probs) sum += p;
        for (int i = 0; i < probs.Length; i++) probs[i] /= sum;
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
        return order[keep - 1];
    }

    [Theory]
    [InlineData(256, 1.0)]
    [InlineData(50257, 1.0)]
    [InlineData(50257, 0.05)]   // peaked, as a trained model's
    [InlineData(1000, 100.0)]   // nearly flat: the nucleus is most of the vocabulary
    public void TheNucleusDrawIsTheOneAFullSortGives(int vocab, double temperature)
    {
        var data = new Rng((ulong)vocab);
        for (int round = 0; round < 12; round++)
        {
            // Rounded logits, so many tokens tie.
            var logits = Enumerable.Range(0, vocab).Select(_ => Math.Round(data.NextGaussian() * 4, round % 3 == 0 ? 0 : 3)).ToArray();
            foreach (double topP in new[] { 1e-9, 0.3, 0.9, 0.95, 1.0 })
            {
                ulong seed = (ulong)(round * 10 + (int)(topP * 7));
                Assert.Equal(Reference(logits, temperature, topP, new Rng(seed)), Sampling.Sample(logits, temperature, topP, new Rng(seed)));
            }
        }
    }
}
