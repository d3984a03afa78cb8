using PureMoE.Models;
using PureMoE.Nn;

namespace PureMoE.Engine.Tests.Nn;

public class AttentionTests
{
    [Fact]
    public void AttentionWithKvCacheMatchesFullForward()
    {
        var rng = new Rng(2);
        var attn = new CausalSelfAttention(32, 4, 2, 10000, rng, initStd: 0.2);
        var x = Tensor.Randn(new Shape(2, 7, 32), rng);
        var full = attn.Forward(x).ToDoubleArray();

        // Prefix of 4 positions, then one at a time: every position's output must equal the full forward's.
        var cache = new KvCache(1);
        var parts = new List<Tensor> { attn.Forward(x.Narrow(1, 0, 4), cache) };
        for (int p = 4; p < 7; p++) parts.Add(attn.Forward(x.Narrow(1, p, 1), cache));
        Assert.Equal(7, cache.Length(0));
        var cached = Tensor.Concat(parts, 1).ToDoubleArray();
        Assert.True(TinyConfigs.MaxAbsDiff(full, cached) < 1e-5);
    }

    [Fact]
    public void AttentionIsCausal()
    {
        var rng = new Rng(4);
        var attn = new CausalSelfAttention(16, 2, 1, 10000, rng, initStd: 0.2);
        var x = Tensor.Randn(new Shape(1, 6, 16), rng);
        var y1 = attn.Forward(x).Narrow(1, 0, 3).ToDoubleArray();
        // Changing later positions must not change earlier outputs.
        var x2 = Tensor.Concat([x.Narrow(1, 0, 3), Tensor.Randn(new Shape(1, 3, 16), rng)], 1);
        var y2 = attn.Forward(x2).Narrow(1, 0, 3).ToDoubleArray();
        Assert.True(TinyConfigs.MaxAbsDiff(y1, y2) < 1e-6);
    }

    [Fact]
    public void ModelWithKvCacheGivesSameLastLogitsAsFullForward()
    {
        var model = new MixtralForCausalLM(TinyConfigs.Mixtral(), new Rng(9));
        long[] ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3];
        using var _ = Tensor.NoGrad();
        var full = model.Forward(TinyConfigs.Ids(ids, 1));
        var cache = model.NewCache();
        model.Forward(TinyConfigs.Ids(ids[..6], 1), cache);
        Tensor last = null!;
        for (int p = 6; p < ids.Length; p++) last = model.Forward(TinyConfigs.Ids([ids[p]], 1), cache);
        var expected = full.Narrow(1, ids.Length - 1, 1).ToDoubleArray();
        Assert.True(TinyConfigs.MaxAbsDiff(expected, last.ToDoubleArray()) < 1e-5);
    }

    [Fact]
    public void GenerateIsDeterministicAndGreedyFollowsArgMax()
    {
        var model = new MixtralForCausalLM(TinyConfigs.Mixtral(), new Rng(9));
        var prompt = TinyConfigs.Ids([1, 2, 3, 4, 5, 6], 2);
        var a = model.Generate(prompt, 5, temperature: 0.8, topP: 0.9, new Rng(42)).ToLongArray();
        var b = model.Generate(prompt, 5, temperature: 0.8, topP: 0.9, new Rng(42)).ToLongArray();
        Assert.Equal(a, b);
        Assert.Equal(2 * 8, a.Length);
        Assert.Equal(new long[] { 1, 2, 3 }, a[..3]);
        Assert.All(a, t => Assert.InRange(t, 0, 31));

        // Greedy: each new token is the argmax of a full (uncached) forward over the sequence so far.
        var greedy = model.Generate(TinyConfigs.Ids([7, 8], 1), 4, temperature: 0, topP: 1, new Rng(0)).ToLongArray();
        using var _ = Tensor.NoGrad();
        for (int n = 2; n < greedy.Length; n++)
        {
            var logits = model.Forward(TinyConfigs.Ids(greedy[..n], 1)).Narrow(1, n - 1, 1).ToDoubleArray();
            Assert.Equal(Sampling.ArgMax(logits), greedy[n]);
        }
    }

    [Fact]
    public void TopPKeepsOnlyTheNucleus()
    {
        double[] logits = [Math.Log(0.5), Math.Log(0.3), Math.Log(0.15), Math.Log(0.05)];
        var rng = new Rng(1);
        var seen = new HashSet<long>();
        for (int i = 0; i < 500; i++) seen.Add(Sampling.Sample(logits, 1.0, 0.7, rng));
        Assert.Equal(new HashSet<long> { 0, 1 }, seen);   // 0.5 < 0.7 ≤ 0.5 + 0.3
    }
}
