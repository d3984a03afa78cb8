using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using PureMoE.Testing;

namespace PureMoE.Engine.Tests.GradCheck;

/// <summary>One attention shape; Block = query rows per block of the block-causal products (0: the default rule).</summary>
public sealed record AttentionCase(int B, int H, int Hkv, int S, int Sk, int D, bool PermutedQ, int Block, ulong Seed, bool Reference)
{
    public Device Device => Reference ? Device.CpuReference : Device.Cpu;
    public override string ToString() => $"B={B} H={H} Hkv={Hkv} S={S} Sk={Sk} D={D} permutedQ={PermutedQ} block={Block} seed={Seed} {Device}";
}

public sealed record RopeCase(int[] Outer, int Seq, int HalfDim, bool Transposed, ulong Seed, bool Reference)
{
    public Device Device => Reference ? Device.CpuReference : Device.Cpu;
    public override string ToString() => $"outer=[{string.Join(",", Outer)}] seq={Seq} dim={2 * HalfDim} transposed={Transposed} seed={Seed} {Device}";
}

public static class AttentionArbitraries
{
    public static Arbitrary<AttentionCase> AttentionCase() =>
        (from b in Gen.Choose(1, 2)
         from hkv in Gen.Elements(1, 2, 4)
         from s in Gen.Choose(1, 5)
         from extra in Gen.Choose(0, 2)
         from d in Gen.Choose(1, 3)
         from p in Gen.Elements(false, true)
         from block in Gen.Elements(0, 1, 2, 3)
         from seed in ShapeGen.Seed
         from r in ShapeGen.Reference
         select new AttentionCase(b, 4, hkv, s, s + extra, d, p, block, seed, r)).ToArbitrary();

    public static Arbitrary<RopeCase> RopeCase() =>
        (from outer in ShapeGen.Dims(0, 2, 3)
         from seq in Gen.Choose(1, 4)
         from half in Gen.Choose(1, 3)
         from tr in Gen.Elements(false, true)
         from seed in ShapeGen.Seed
         from r in ShapeGen.Reference
         select new RopeCase(outer, seq, half, tr, seed, r)).ToArbitrary();
}

public class AttentionGradTests
{
    /// <summary>Naive causal GQA attention: query i of S attends to keys j ≤ i + Sk − S; head h reads kv head h / (H/Hkv).</summary>
    internal static double[] NaiveAttention(double[] q, double[] k, double[] v, int b, int h, int hkv, int s, int sk, int d)
    {
        var o = new double[b * h * s * d];
        int group = h / hkv;
        for (int bi = 0; bi < b; bi++)
            for (int hi = 0; hi < h; hi++)
            {
                int kh = hi / group;
                for (int i = 0; i < s; i++)
                {
                    int last = i + sk - s;
                    var scores = new double[last + 1];
                    double max = double.NegativeInfinity;
                    for (int j = 0; j <= last; j++)
                    {
                        double acc = 0;
                        for (int e = 0; e < d; e++)
                            acc += q[((bi * h + hi) * s + i) * d + e] * k[((bi * hkv + kh) * sk + j) * d + e];
                        scores[j] = acc / Math.Sqrt(d);
                        max = Math.Max(max, scores[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j <= last; j++) { scores[j] = Math.Exp(scores[j] - max); sum += scores[j]; }
                    for (int e = 0; e < d; e++)
                    {
                        double acc = 0;
                        for (int j = 0; j <= last; j++) acc += scores[j] / sum * v[((bi * hkv + kh) * sk + j) * d + e];
                        o[((bi * h + hi) * s + i) * d + e] = acc;
                    }
                }
            }
        return o;
    }

    private static Tensor Query(Tensor stored, AttentionCase c) => c.PermutedQ ? stored.Permute(0, 2, 1, 3) : stored;

    [Property(Arbitrary = [typeof(AttentionArbitraries)], MaxTest = 100)]
    public void CausalAttentionGradients(AttentionCase c)
    {
        var rng = new Rng(c.Seed);
        // With PermutedQ, q is stored [B, S, H, D] and permuted to [B, H, S, D] (a non-contiguous view).
        var q = GradChecker.Randn(c.PermutedQ ? new Shape(c.B, c.S, c.H, c.D) : new Shape(c.B, c.H, c.S, c.D), rng, device: c.Device);
        var k = GradChecker.Randn(new Shape(c.B, c.Hkv, c.Sk, c.D), rng, device: c.Device);
        var v = GradChecker.Randn(new Shape(c.B, c.Hkv, c.Sk, c.D), rng, device: c.Device);
        GradChecker.Check($"CausalAttention {c}", t => Tensor.CausalAttention(Query(t[0], c), t[1], t[2], c.Block), c.Seed, q, k, v);
    }

    [Property(Arbitrary = [typeof(AttentionArbitraries)], MaxTest = 100)]
    public void CausalAttentionMatchesNaiveLoops(AttentionCase c)
    {
        var rng = new Rng(c.Seed);
        var qs = GradChecker.Randn(c.PermutedQ ? new Shape(c.B, c.S, c.H, c.D) : new Shape(c.B, c.H, c.S, c.D), rng, device: c.Device);
        var q = Query(qs, c);
        var k = GradChecker.Randn(new Shape(c.B, c.Hkv, c.Sk, c.D), rng, device: c.Device);
        var v = GradChecker.Randn(new Shape(c.B, c.Hkv, c.Sk, c.D), rng, device: c.Device);
        var y = Tensor.CausalAttention(q, k, v, c.Block);
        Assert.Equal(new Shape(c.B, c.H, c.S, c.D), y.Shape);
        var expected = NaiveAttention(q.ToDoubleArray(), k.ToDoubleArray(), v.ToDoubleArray(), c.B, c.H, c.Hkv, c.S, c.Sk, c.D);
        var actual = y.ToDoubleArray();
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 1e-12);
    }

    /// <summary>
    /// Float32 on the SIMD path: blocks of 8 queries (odd S, a KV-cache offset, grouped heads) against the plain
    /// products (one block), in the output and every gradient. Unwritten memory is NaN in the tests, so a read of a
    /// score or dP entry the blocks skip would show.
    /// </summary>
    [Theory]
    [InlineData(37, 40, 8)]
    [InlineData(64, 64, 16)]
    [InlineData(9, 9, 4)]
    public void BlockCausalProductsMatchThePlainOnes(int s, int sk, int block)
    {
        var rng = new Rng(17);
        Tensor Leaf(params int[] shape)
        {
            var t = Tensor.Randn(new Shape(shape), rng);
            t.RequiresGrad = true;
            return t;
        }
        var (q, k, v) = (Leaf(2, 4, s, 16), Leaf(2, 2, sk, 16), Leaf(2, 2, sk, 16));
        var target = Tensor.Randn(new Shape(2, 4, s, 16), rng);
        float[][] Run(int blockRows)
        {
            q.ZeroGrad(); k.ZeroGrad(); v.ZeroGrad();
            var y = Tensor.CausalAttention(q, k, v, blockRows);
            y.Mul(target).Sum().Backward();
            return [y.ToFloatArray(), q.Grad!.ToFloatArray(), k.Grad!.ToFloatArray(), v.Grad!.ToFloatArray()];
        }
        var plain = Run(s);
        var blocked = Run(block);
        string[] names = ["y", "dq", "dk", "dv"];
        for (int i = 0; i < names.Length; i++)
            for (int j = 0; j < plain[i].Length; j++)
                Assert.True(Math.Abs(plain[i][j] - blocked[i][j]) <= 1e-5 * (1 + Math.Abs(plain[i][j])),
                    $"{names[i]}[{j}]: plain {plain[i][j]}, blocks of {block}: {blocked[i][j]}");
    }

    [Fact]
    public void DefaultBlocksStartAt256Queries()
    {
        Assert.Equal(64, Tensor.AttentionBlockRows(64));
        Assert.Equal(255, Tensor.AttentionBlockRows(255));
        Assert.Equal(128, Tensor.AttentionBlockRows(256));
        Assert.Equal(128, Tensor.AttentionBlockRows(512));
        Assert.Equal(256, Tensor.AttentionBlockRows(1024));
    }

    [Fact]
    public void CausalAttentionFirstQueryOnlySeesFirstKey()
    {
        // S = Sk: query 0 sees key 0 only, so its output is exactly v[0] whatever the scores.
        var rng = new Rng(3);
        var q = GradChecker.Randn(new Shape(1, 2, 3, 2), rng);
        var k = GradChecker.Randn(new Shape(1, 1, 3, 2), rng);
        var v = GradChecker.Randn(new Shape(1, 1, 3, 2), rng);
        var y = Tensor.CausalAttention(q, k, v).ToDoubleArray();
        var vv = v.ToDoubleArray();
        for (int h = 0; h < 2; h++)
        {
            Assert.Equal(vv[0], y[h * 6 + 0]);
            Assert.Equal(vv[1], y[h * 6 + 1]);
        }
    }

    private static Tensor RopeInput(RopeCase c, Rng rng)
    {
        int dim = 2 * c.HalfDim;
        // Transposed: stored [..outer, dim, seq] and viewed as [..outer, seq, dim].
        int[] stored = c.Transposed ? [.. c.Outer, dim, c.Seq] : [.. c.Outer, c.Seq, dim];
        return GradChecker.Randn(new Shape(stored), rng, device: c.Device);
    }

    [Property(Arbitrary = [typeof(AttentionArbitraries)], MaxTest = Runs.Many)]
    public void RopeGradient(RopeCase c)
    {
        var rng = new Rng(c.Seed);
        var x = RopeInput(c, rng);
        var (cos, sin) = Tensor.RopeTables(c.Seq, 2 * c.HalfDim, 10000, start: 3, DType.Float64, c.Device);
        GradChecker.Check($"Rope {c}", t => (c.Transposed ? t[0].T : t[0]).Rope(cos, sin), c.Seed, x);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RopeOfTheHeadsOfAProjectionReadsAndWritesThemWhereTheyLie(bool reference)
    {
        // Attention rotates q = proj(x).Reshape(B, S, H, D).Transpose(1, 2): the kernel reads that view in place, and
        // the backward writes the gradient in the [B, S, H, D] layout (handed back as the transposed view), so neither
        // direction copies. Same values and gradients as rotating a dense copy.
        var device = reference ? Device.CpuReference : Device.Cpu;
        var rng = new Rng(11);
        var x = GradChecker.Randn(new Shape(2, 5, 3, 6), rng, device: device);   // [B, S, H, D]
        var (cos, sin) = Tensor.RopeTables(5, 6, 10000, start: 2, DType.Float64, device);
        GradChecker.Check("Rope of a heads view", t => t[0].Transpose(1, 2).Rope(cos, sin), 11, x);

        var seed = GradChecker.Randn(new Shape(2, 3, 5, 6), rng, device: device);
        Tensor Run(bool viaCopy, out Tensor dx)
        {
            var leaf = x.Detach();
            leaf.RequiresGrad = true;
            var heads = leaf.Transpose(1, 2);
            var y = (viaCopy ? heads.Clone() : heads).Rope(cos, sin);
            y.Backward(seed);
            dx = leaf.Grad!;
            return y;
        }
        var direct = Run(viaCopy: false, out var dxDirect);
        var copied = Run(viaCopy: true, out var dxCopied);
        Assert.Equal(copied.ToDoubleArray(), direct.ToDoubleArray());
        Assert.Equal(dxCopied.ToDoubleArray(), dxDirect.ToDoubleArray());
    }

    [Property(Arbitrary = [typeof(AttentionArbitraries)], MaxTest = Runs.Some)]
    public void RopeMatchesTheFormula(RopeCase c)
    {
        var rng = new Rng(c.Seed);
        var stored = RopeInput(c, rng);
        var x = c.Transposed ? stored.T : stored;
        int dim = 2 * c.HalfDim, half = c.HalfDim;
        const double theta = 500;
        const int start = 2;
        var (cos, sin) = Tensor.RopeTables(c.Seq, dim, theta, start, DType.Float64, c.Device);
        var y = x.Rope(cos, sin).ToDoubleArray();
        var xv = x.ToDoubleArray();
        int rows = xv.Length / dim;
        for (int r = 0; r < rows; r++)
        {
            int pos = r % c.Seq + start;
            for (int j = 0; j < half; j++)
            {
                double invFreq = (float)(1.0 / Math.Pow(theta, 2.0 * j / dim));
                double a = pos * invFreq;
                double x1 = xv[r * dim + j], x2 = xv[r * dim + half + j];
                Assert.Equal(x1 * Math.Cos(a) - x2 * Math.Sin(a), y[r * dim + j], 1e-12);
                Assert.Equal(x2 * Math.Cos(a) + x1 * Math.Sin(a), y[r * dim + half + j], 1e-12);
            }
        }
    }
}
