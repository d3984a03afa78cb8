using FsCheck;
using FsCheck.Xunit;
using PureMoE.Backends;

namespace PureMoE.Engine.Tests.Backends;

/// <summary>
/// The fast CPU kernels against the reference backend. Tolerances: 1e-6 relative for elementwise arithmetic,
/// 2e-6 relative (+ small absolute) where SIMD exp/tanh/pow differ from MathF by an ulp or two, and 1e-5 relative
/// (absolute scaled by Σ|x|) where a summation order differs (reductions, softmax, norms).
/// </summary>
public class CpuKernelTests
{
    // 1, 3, 17, 33: tails around the 8-lane vectors; 1000: not a multiple of 32; 70001: the multi-threaded path.
    public static readonly TheoryData<int> Sizes = new() { 1, 3, 8, 17, 33, 1000, 70001 };

    private static readonly UnaryOp[] AllUnary = Enum.GetValues<UnaryOp>();

    private static (float rtol, float atol) UnaryTol(UnaryOp op) => op switch
    {
        UnaryOp.Exp or UnaryOp.Log or UnaryOp.Sigmoid or UnaryOp.Silu or UnaryOp.Tanh or UnaryOp.PowScalar => (2e-6f, 1e-7f),
        // 0.5·x·(1 + tanh u) cancels for x ≪ 0 in both implementations: one ulp of tanh near −1 is ~6e-8·|x|/2.
        UnaryOp.Gelu => (2e-6f, 5e-7f),
        _ => (1e-6f, 0f),
    };

    private static void CheckUnary(UnaryOp op, int n, int seed)
    {
        bool positive = op is UnaryOp.Log or UnaryOp.Sqrt or UnaryOp.Rsqrt or UnaryOp.PowScalar;
        var x = K.Rand(n + 5, seed, positive ? 0.05f : -6f, 6f);
        double alpha = op == UnaryOp.PowScalar ? 1.7 : 0.37;
        var ye = K.S(new float[n + 2]);
        var ya = K.S(new float[n + 2]);
        K.Ref.Unary(op, K.S(x), 5, ye, 2, n, alpha);
        K.Cpu.Unary(op, K.S(x), 5, ya, 2, n, alpha);
        var (rtol, atol) = UnaryTol(op);
        K.Close(K.F(ye), K.F(ya), rtol, atol, $"{op} n={n}");
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void UnaryMatchesReference(int n)
    {
        foreach (var op in AllUnary) CheckUnary(op, n, n * 31 + (int)op);
    }

    [Property(MaxTest = 40)]
    public void UnaryProperty(PositiveInt size, int seed)
    {
        int n = size.Get % 3000 + 1;
        CheckUnary(AllUnary[(seed & 0x7fffffff) % AllUnary.Length], n, seed);
    }

    [Theory]
    [InlineData(17)]
    [InlineData(70001)]
    public void UnaryFloat64MatchesReference(int n)
    {
        foreach (var op in AllUnary)
        {
            bool positive = op is UnaryOp.Log or UnaryOp.Sqrt or UnaryOp.Rsqrt or UnaryOp.PowScalar;
            var x = K.RandD(n, n + (int)op, positive ? 0.05 : -6, 6);
            var ye = K.S(new double[n]); var ya = K.S(new double[n]);
            K.Ref.Unary(op, K.S(x), 0, ye, 0, n, 1.3);
            K.Cpu.Unary(op, K.S(x), 0, ya, 0, n, 1.3);
            K.Close(((CpuStorage)ye).As<double>(), ((CpuStorage)ya).As<double>(), 1e-13, 1e-15, op.ToString());
        }
    }

    [Fact]
    public void UnaryInPlaceMatchesReference()
    {
        var x = K.Rand(1000, 5);
        foreach (var op in new[] { UnaryOp.Gelu, UnaryOp.Silu, UnaryOp.Exp, UnaryOp.Relu })
        {
            var e = K.S(x); var a = K.S(x);
            K.Ref.Unary(op, e, 0, e, 0, 1000, 0);
            K.Cpu.Unary(op, a, 0, a, 0, 1000, 0);
            K.Close(K.F(e), K.F(a), 2e-6, 2e-7, op.ToString());
        }
    }

    // ------------------------------------------------------------------ binary

    private static float[] BinaryInput(BinaryOp op, int n, int seed, bool isB)
    {
        var v = K.Rand(n, seed, -3, 3);
        for (int i = 0; i < n; i++)
        {
            if (op == BinaryOp.Pow && !isB) v[i] = Math.Abs(v[i]) + 0.1f;
            if (op == BinaryOp.Div && isB) v[i] = v[i] >= 0 ? v[i] + 0.5f : v[i] - 0.5f;
            if (op is BinaryOp.Equal or BinaryOp.Maximum or BinaryOp.Greater) v[i] = MathF.Round(v[i]); // many ties
            if (op is BinaryOp.SigmoidBackwardFromOutput && !isB) v[i] = (v[i] + 3) / 6;
            if (op is BinaryOp.TanhBackwardFromOutput && !isB) v[i] /= 3;
        }
        return v;
    }

    private static void CheckBinary(BinaryOp op, int[] aShape, int[] bShape, int[] outShape, int seed, int aOff = 0, int bOff = 0)
    {
        int na = aShape.Aggregate(1, (p, d) => p * d), nb = bShape.Aggregate(1, (p, d) => p * d);
        int n = outShape.Aggregate(1, (p, d) => p * d);
        var a = BinaryInput(op, na + aOff, seed, false);
        var b = BinaryInput(op, nb + bOff, seed + 1, true);
        var sa = new Strided(K.S(a), aOff, K.BroadcastStrides(aShape, outShape));
        var sb = new Strided(K.S(b), bOff, K.BroadcastStrides(bShape, outShape));
        var shape = new Shape(outShape);
        var ye = K.S(new float[n]); var ya = K.S(new float[n]);
        K.Ref.Binary(op, sa, sb, ye, shape);
        K.Cpu.Binary(op, sa, sb, ya, shape);
        double rtol = op is BinaryOp.GeluBackward or BinaryOp.SiluBackward ? 1e-5 : op == BinaryOp.Pow ? 2e-6 : 1e-6;
        double atol = op is BinaryOp.GeluBackward or BinaryOp.SiluBackward ? 1e-6 : 1e-7;
        K.Close(K.F(ye), K.F(ya), rtol, atol, $"{op} {string.Join('x', aShape)} ∘ {string.Join('x', bShape)}");
    }

    public static readonly TheoryData<int[], int[], int[]> BinaryShapes = new()
    {
        { [1], [1], [1] },
        { [3, 17], [3, 17], [3, 17] },        // same shape
        { [40, 1000], [40, 1000], [40, 1000] }, // same shape, multi-threaded
        { [33], [1], [33] },                   // scalar b
        { [], [5, 7], [5, 7] },                 // scalar a (rank 0)
        { [70001], [1], [70001] },             // scalar, multi-threaded
        { [9, 33], [33], [9, 33] },            // row broadcast
        { [33], [9, 33], [9, 33] },            // row broadcast of a
        { [64, 1000], [1000], [64, 1000] },    // row broadcast, multi-threaded
        { [2, 3, 17], [3, 17], [2, 3, 17] },   // row broadcast over a leading dim
        { [9, 33], [9, 1], [9, 33] },          // column broadcast
        { [9, 1], [9, 33], [9, 33] },          // column broadcast of a
        { [2, 3, 17], [2, 3, 1], [2, 3, 17] }, // column broadcast, rank 3
        { [300, 257], [300, 1], [300, 257] },  // column broadcast, multi-threaded
        { [3, 1, 5], [1, 4, 5], [3, 4, 5] },   // general (reference fallback)
        { [2, 3, 4], [2, 1, 4], [2, 3, 4] },   // middle broadcast (reference fallback)
    };

    [Theory]
    [MemberData(nameof(BinaryShapes))]
    public void BinaryMatchesReference(int[] aShape, int[] bShape, int[] outShape)
    {
        foreach (var op in Enum.GetValues<BinaryOp>()) CheckBinary(op, aShape, bShape, outShape, (int)op * 7 + outShape.Sum());
    }

    [Fact]
    public void BinaryWithOperandOffsets()
    {
        CheckBinary(BinaryOp.Add, [5, 19], [19], [5, 19], 3, aOff: 3, bOff: 7);
        CheckBinary(BinaryOp.Mul, [5, 19], [5, 1], [5, 19], 4, aOff: 1, bOff: 2);
        CheckBinary(BinaryOp.Sub, [5, 19], [5, 19], [5, 19], 5, aOff: 4, bOff: 6);
    }

    [Property(MaxTest = 40)]
    public void BinaryRowBroadcastProperty(PositiveInt rows, PositiveInt cols, int seed)
    {
        int r = rows.Get % 50 + 1, c = cols.Get % 300 + 1;
        var ops = Enum.GetValues<BinaryOp>();
        var op = ops[(seed & 0x7fffffff) % ops.Length];
        CheckBinary(op, [r, c], [c], [r, c], seed);
        CheckBinary(op, [r, c], [r, 1], [r, c], seed + 2);
        CheckBinary(op, [r, c], [r, c], [r, c], seed + 4);
    }

    [Fact]
    public void AddInPlaceAliasIsSafe()
    {
        // y is a's own storage (Tensor.AddInPlace), b broadcast by rows.
        var a = K.Rand(64 * 1000, 1); var b = K.Rand(1000, 2);
        var e = K.S(a); var act = K.S(a);
        var shape = new Shape(64, 1000);
        K.Ref.Binary(BinaryOp.Add, new Strided(e, 0, [1000, 1]), new Strided(K.S(b), 0, [0, 1]), e, shape);
        K.Cpu.Binary(BinaryOp.Add, new Strided(act, 0, [1000, 1]), new Strided(K.S(b), 0, [0, 1]), act, shape);
        K.SameBits(K.F(e), K.F(act));
    }

    [Fact]
    public void BinaryViaTensorsMatchesReference()
    {
        var x = Tensor.FromArray(K.Rand(6 * 50, 9), 6, 50);
        var w = Tensor.FromArray(K.Rand(50, 10), 50);
        var fast = x.Add(w).Mul(x).ToArray<float>();
        var xr = x.To(Device.CpuReference); var wr = w.To(Device.CpuReference);
        var slow = xr.Add(wr).Mul(xr).ToArray<float>();
        K.Close(slow, fast, 1e-6, 0);
    }
}
