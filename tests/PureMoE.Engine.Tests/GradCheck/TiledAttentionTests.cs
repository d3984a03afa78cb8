using PureMoE.Backends.Cpu;

namespace PureMoE.Engine.Tests.GradCheck;

/// <summary>
/// Causal attention tile by tile (Backends/Cpu/FlashAttention.cs, the CPU's path from 512 queries) against the
/// block-causal products, which the gradient checks and the naive loops of <see cref="AttentionGradTests"/> hold.
/// </summary>
public class TiledAttentionTests
{
    private static Tensor Leaf(Rng rng, params int[] shape)
    {
        var t = Tensor.Randn(new Shape(shape), rng);
        t.RequiresGrad = true;
        return t;
    }

    // y and the three gradients of Σ y·target, through the tiled path or the products.
    private static float[][] Run(Tensor q, Tensor k, Tensor v, Tensor target, bool tiled, Func<Tensor, Tensor>? viewQ = null,
        Func<Tensor, Tensor>? viewKv = null)
    {
        q.ZeroGrad(); k.ZeroGrad(); v.ZeroGrad();
        var y = Tensor.CausalAttention(viewQ?.Invoke(q) ?? q, viewKv?.Invoke(k) ?? k, viewKv?.Invoke(v) ?? v, blockRows: 0, tiled);
        y.Mul(target).Sum().Backward();
        return [y.ToFloatArray(), q.Grad!.ToFloatArray(), k.Grad!.ToFloatArray(), v.Grad!.ToFloatArray()];
    }

    private static void AssertClose(float[][] expected, float[][] actual, string what)
    {
        string[] names = ["y", "dq", "dk", "dv"];
        for (int i = 0; i < names.Length; i++)
        {
            Assert.Equal(expected[i].Length, actual[i].Length);
            for (int j = 0; j < expected[i].Length; j++)
                Assert.True(Math.Abs(expected[i][j] - actual[i][j]) <= 2e-5 * (1 + Math.Abs(expected[i][j])),
                    $"{what}: {names[i]}[{j}]: products {expected[i][j]}, tiles {actual[i][j]}");
        }
    }

    /// <summary>
    /// Ragged tiles (S and Sk not multiples of 64), a KV-cache offset (Sk &gt; S, so the first query sees many key
    /// blocks), grouped heads, head dimensions 8 to 64, one query and one key. Unwritten memory is NaN in the tests, so a
    /// tile element read before it is written would show.
    /// </summary>
    [Theory]
    [InlineData(2, 4, 2, 37, 40, 16)]
    [InlineData(1, 4, 2, 130, 130, 32)]
    [InlineData(1, 2, 1, 200, 333, 8)]
    [InlineData(1, 2, 2, 65, 65, 64)]
    [InlineData(2, 3, 1, 1, 1, 24)]
    [InlineData(1, 2, 1, 1, 70, 8)]
    [InlineData(1, 1, 1, 128, 128, 40)]
    public void TilesMatchTheProducts(int b, int h, int hkv, int s, int sk, int d)
    {
        var rng = new Rng((ulong)(s * 1000 + sk + d));
        var (q, k, v) = (Leaf(rng, b, h, s, d), Leaf(rng, b, hkv, sk, d), Leaf(rng, b, hkv, sk, d));
        var target = Tensor.Randn(new Shape(b, h, s, d), rng);
        AssertClose(Run(q, k, v, target, tiled: false), Run(q, k, v, target, tiled: true), $"B={b} H={h} Hkv={hkv} S={s} Sk={sk} D={d}");
    }

    /// <summary>Q as the heads of a projection ([B, S, H, D] transposed: a dense copy is made), K and V read in place from a longer buffer (a KV cache's).</summary>
    [Fact]
    public void ViewsOfQueriesAndACacheBufferMatchTheProducts()
    {
        var rng = new Rng(5);
        var q = Leaf(rng, 2, 100, 4, 16);                  // [B, S, H, D]
        var k = Leaf(rng, 2, 2, 150, 16);                  // capacity 150, 120 positions filled
        var v = Leaf(rng, 2, 2, 150, 16);
        var target = Tensor.Randn(new Shape(2, 4, 100, 16), rng);
        Tensor Heads(Tensor t) => t.Transpose(1, 2);
        Tensor Filled(Tensor t) => t.Narrow(2, 0, 120);
        AssertClose(Run(q, k, v, target, tiled: false, Heads, Filled), Run(q, k, v, target, tiled: true, Heads, Filled), "views");
    }

    [Fact]
    public void SameBitsRunToRun()
    {
        var rng = new Rng(9);
        var (q, k, v) = (Leaf(rng, 1, 4, 300, 32), Leaf(rng, 1, 2, 300, 32), Leaf(rng, 1, 2, 300, 32));
        var target = Tensor.Randn(new Shape(1, 4, 300, 32), rng);
        var first = Run(q, k, v, target, tiled: true);
        var second = Run(q, k, v, target, tiled: true);
        for (int i = 0; i < first.Length; i++) Assert.Equal(first[i], second[i]);
    }

    /// <summary>
    /// The choice: from 512 queries on <see cref="Device.Cpu"/> in float32 the op keeps one log-sum-exp per query
    /// row for its backward; the products keep the [rows, Sk] probabilities (below it, in float64, on the reference
    /// backend).
    /// </summary>
    [Theory]
    [InlineData(512, DType.Float32, false, true)]
    [InlineData(511, DType.Float32, false, false)]
    [InlineData(512, DType.Float64, false, false)]
    [InlineData(512, DType.Float32, true, false)]
    public void TilesFromTheThresholdOnTheSimdBackendInFloat32(int s, DType dtype, bool reference, bool tiles)
    {
        var device = reference ? Device.CpuReference : Device.Cpu;
        var rng = new Rng(2);
        Tensor Input(params int[] shape)
        {
            var t = Tensor.Randn(new Shape(shape), rng, device: device).To(dtype);
            t.RequiresGrad = true;
            return t;
        }
        var y = Tensor.CausalAttention(Input(1, 2, s, 8), Input(1, 1, s, 8), Input(1, 1, s, 8));
        var node = y.GradFn!;
        while (node.Op != "CausalAttention") node = node.Inputs[0].GradFn!;   // past the reshape of the folded heads
        var saved = node.Saved!;
        Assert.Equal(tiles ? new Shape(1, 2 * s) : new Shape(1, 2 * s, s), saved[0].Shape);
        Assert.Equal(512, Tensor.TiledAttentionMinQueries);
    }

    /// <summary>
    /// What the tiles are for: at 2,048 queries a step of attention (forward and backward in a scope that reuses host
    /// memory) takes less host memory than one [rows, Sk] score matrix, against about four of them for the products.
    /// </summary>
    [Fact]
    public void TheTiledStepHoldsLessThanOneScoreMatrix()
    {
        const int s = 2048, d = 32;
        long scoreMatrix = 2L * s * s * sizeof(float);   // 2 query heads on 1 kv head
        long Step(bool tiled)
        {
            var pool = new HostArrayPool();
            var rng = new Rng(4);
            var (q, k, v) = (Leaf(rng, 1, 2, s, d), Leaf(rng, 1, 1, s, d), Leaf(rng, 1, 1, s, d));
            using (DeviceScope.Begin(pool))
                Tensor.CausalAttention(q, k, v, blockRows: 0, tiled).Sum().Backward();
            return pool.LastScopeBytes;
        }
        long products = Step(tiled: false), tiles = Step(tiled: true);
        Assert.True(products >= 3 * scoreMatrix, $"products: {products} bytes, a score matrix {scoreMatrix}");
        Assert.True(tiles < scoreMatrix, $"tiles: {tiles} bytes, a score matrix {scoreMatrix}");
    }

    /// <summary>The tiles' own exp, over [−90, 0] every 2⁻¹², against the float64 exp: within 2 ulp, 0 below −87.3.</summary>
    [Fact]
    public void OwnExpIsWithinTwoUlpOnTheNonPositiveNumbers()
    {
        if (!FlashAttention.Supported(8)) return;   // no 8-lane FMA: the tiles never run
        double worst = 0;
        for (int i = 0; i <= 90 * 4096; i += 8)
        {
            var x = System.Runtime.Intrinsics.Vector256.Create(Enumerable.Range(0, 8).Select(l => -(i + l) / 4096f).ToArray());
            var y = FlashAttention.ExpNonPositive(x);
            for (int l = 0; l < 8; l++)
            {
                float xi = x[l];
                if (xi < -87.3f)
                {
                    Assert.Equal(0f, y[l]);
                    continue;
                }
                double exact = Math.Exp(xi);
                double ulp = MathF.BitIncrement((float)exact) - (float)exact;
                worst = Math.Max(worst, Math.Abs(y[l] - exact) / ulp);
            }
        }
        Assert.True(worst <= 2, $"worst error {worst} ulp");
        Assert.True(worst > 0.4, $"worst error {worst} ulp: the comparison is too lenient to mean anything");
        Assert.Equal(1f, FlashAttention.ExpNonPositive(System.Runtime.Intrinsics.Vector256<float>.Zero)[0]);
    }

    [Fact]
    public void SupportedHeadDimensionsAreMultiplesOf8()
    {
        Assert.False(FlashAttention.Supported(12));
        Assert.False(FlashAttention.Supported(0));
        Assert.Equal(System.Runtime.Intrinsics.X86.Fma.IsSupported, FlashAttention.Supported(64));
    }
}
