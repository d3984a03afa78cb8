using PureMoE.Nn;

namespace PureMoE.Engine.Tests.Nn;

public class KvCacheTests
{
    // Appends pieces of 5, 1, 1, …, 1, 30 positions (past the first capacity of 16, then past its doubling) and checks
    // each returned view against the plain concatenation, and that attention reads the views like dense tensors.
    [Fact]
    public void ViewsOfTheGrowingBufferEqualTheConcatenation()
    {
        var rng = new Rng(4);
        var cache = new KvCache(2);
        var allK = new List<Tensor>();
        var allV = new List<Tensor>();
        int[] pieces = [5, .. Enumerable.Repeat(1, 14), 30];
        using var _ = Tensor.NoGrad();
        foreach (int n in pieces)
        {
            var k = Tensor.Randn(new Shape(2, 3, n, 4), rng);
            var v = Tensor.Randn(new Shape(2, 3, n, 4), rng).Transpose(2, 3).Contiguous().Transpose(2, 3);   // not contiguous
            allK.Add(k);
            allV.Add(v);
            var (ck, cv) = cache.Update(1, k, v);
            Assert.Equal(Tensor.Concat(allK, 2).ToFloatArray(), ck.ToFloatArray());
            Assert.Equal(Tensor.Concat(allV, 2).ToFloatArray(), cv.ToFloatArray());
            Assert.Equal(allK.Sum(t => t.Shape[2]), cache.Length(1));

            // Six queries [2, 6, S_new, 4] (three per kv head) over the cached positions: the same as over dense copies.
            var q = Tensor.Randn(new Shape(2, 6, n, 4), rng);
            Assert.Equal(Tensor.CausalAttention(q, ck.Contiguous(), cv.Contiguous()).ToFloatArray(),
                Tensor.CausalAttention(q, ck, cv).ToFloatArray());
        }
        Assert.Equal(0, cache.Length(0));
        cache.Clear();
        Assert.Equal(0, cache.Length(1));
    }

    [Fact]
    public void WithGradientsTheCacheConcatenatesAndKeepsTheGraph()
    {
        var rng = new Rng(5);
        var cache = new KvCache(1);
        var k1 = Tensor.Randn(new Shape(1, 1, 2, 3), rng);
        var k2 = Tensor.Randn(new Shape(1, 1, 1, 3), rng);
        k1.RequiresGrad = k2.RequiresGrad = true;
        cache.Update(0, k1, k1.MulScalar(2));
        var (k, v) = cache.Update(0, k2, k2.MulScalar(2));
        k.Add(v).Sum().Backward();
        Assert.Equal(Enumerable.Repeat(3f, 6), k1.Grad!.ToFloatArray());
        Assert.Equal(Enumerable.Repeat(3f, 3), k2.Grad!.ToFloatArray());
    }
}
