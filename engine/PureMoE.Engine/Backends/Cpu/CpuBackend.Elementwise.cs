using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace PureMoE.Backends.Cpu;

public partial class CpuBackend
{
    private const int ElementGrain = 1024; // piece boundaries for elementwise splits (a multiple of every vector width)

    /// <inheritdoc />
    public override void Unary(UnaryOp op, Storage x, int xOffset, Storage y, int yOffset, int n, double alpha)
    {
        // Partially overlapping in/out ranges would make the vector kernels read values they already wrote.
        if (n <= 0 || !Simd.Enabled || (ReferenceEquals(x, y) && xOffset != yOffset))
        {
            base.Unary(op, x, xOffset, y, yOffset, n, alpha);
            return;
        }
        if (x.DType == DType.Float32)
        {
            float[] xs = A<float>(x), ys = A<float>(y);
            float a = (float)alpha;
            long cost = op is UnaryOp.Exp or UnaryOp.Log or UnaryOp.Silu or UnaryOp.Sigmoid or UnaryOp.Gelu or UnaryOp.Tanh or UnaryOp.PowScalar ? 8 : 1;
            Par.For(n, cost, (s, e) => UnaryF(op, xs.AsSpan(xOffset + s, e - s), ys.AsSpan(yOffset + s, e - s), a), ElementGrain);
        }
        else if (x.DType == DType.Float64 && UnaryHasPrimitive(op))
        {
            double[] xs = A<double>(x), ys = A<double>(y);
            Par.For(n, 4, (s, e) => UnaryPrimitive(op, xs.AsSpan(xOffset + s, e - s), ys.AsSpan(yOffset + s, e - s), alpha), ElementGrain);
        }
        else base.Unary(op, x, xOffset, y, yOffset, n, alpha);
    }

    private static bool UnaryHasPrimitive(UnaryOp op) => op is UnaryOp.Neg or UnaryOp.Exp or UnaryOp.Log or UnaryOp.Sqrt
        or UnaryOp.Rsqrt or UnaryOp.Sigmoid or UnaryOp.Tanh or UnaryOp.Abs or UnaryOp.PowScalar or UnaryOp.AddScalar or UnaryOp.MulScalar;

    // The ops TensorPrimitives has a kernel for, one generic dispatch for float and double.
    private static void UnaryPrimitive<T>(UnaryOp op, ReadOnlySpan<T> x, Span<T> y, T a) where T : IFloatingPointIeee754<T>
    {
        switch (op)
        {
            case UnaryOp.Neg: TensorPrimitives.Negate(x, y); break;
            case UnaryOp.Exp: TensorPrimitives.Exp(x, y); break;
            case UnaryOp.Log: TensorPrimitives.Log(x, y); break;
            case UnaryOp.Sqrt: TensorPrimitives.Sqrt(x, y); break;
            case UnaryOp.Rsqrt: TensorPrimitives.ReciprocalSqrt(x, y); break;
            case UnaryOp.Sigmoid: TensorPrimitives.Sigmoid(x, y); break;
            case UnaryOp.Tanh: TensorPrimitives.Tanh(x, y); break;
            case UnaryOp.Abs: TensorPrimitives.Abs(x, y); break;
            case UnaryOp.PowScalar: TensorPrimitives.Pow(x, a, y); break;
            case UnaryOp.AddScalar: TensorPrimitives.Add(x, a, y); break;
            case UnaryOp.MulScalar: TensorPrimitives.Multiply(x, a, y); break;
            default: throw new ArgumentOutOfRangeException(nameof(op));
        }
    }

    private static void UnaryF(UnaryOp op, ReadOnlySpan<float> x, Span<float> y, float a)
    {
        switch (op)
        {
            case UnaryOp.Relu: Map<ReluOp>(x, y); break;
            case UnaryOp.Positive: Map<PositiveOp>(x, y); break;
            case UnaryOp.Silu: Map<SiluOp>(x, y); break;
            case UnaryOp.Gelu: GeluF(x, y); break;
            default: UnaryPrimitive(op, x, y, a); break;
        }
    }

    // GELU (tanh form) exactly as the reference composes it, with TensorPrimitives.Tanh on cache-sized blocks.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GeluF(ReadOnlySpan<float> x, Span<float> y)
    {
        const float c = 0.7978845608028654f, k = 0.044715f;
        Span<float> t = stackalloc float[512];
        for (int b = 0; b < x.Length; b += t.Length)
        {
            int len = Math.Min(t.Length, x.Length - b);
            ReadOnlySpan<float> xb = x.Slice(b, len);
            Span<float> tb = t[..len], yb = y.Slice(b, len);
            int i = 0;
            var vc = Vector256.Create(c); var vk = Vector256.Create(k);
            for (; i <= len - 8; i += 8)
            {
                var v = Vector256.Create(xb[i..]);
                (vc * (v + vk * v * v * v)).CopyTo(tb[i..]);
            }
            for (; i < len; i++) { float v = xb[i]; tb[i] = c * (v + k * v * v * v); }
            TensorPrimitives.Tanh(tb, tb);
            i = 0;
            var half = Vector256.Create(0.5f);
            for (; i <= len - 8; i += 8)
            {
                var v = Vector256.Create(xb[i..]);
                (half * v * (Vector256<float>.One + Vector256.Create(tb[i..]))).CopyTo(yb[i..]);
            }
            for (; i < len; i++) yb[i] = 0.5f * xb[i] * (1f + tb[i]);
        }
    }

    // ------------------------------------------------------------------ elementwise op definitions

    private interface IUnaryF
    {
        static abstract float Apply(float x);
        static abstract Vector256<float> Apply(Vector256<float> x);
    }

    private interface IBinaryF
    {
        static abstract float Apply(float a, float b);
        static abstract Vector256<float> Apply(Vector256<float> a, Vector256<float> b);
    }

    private struct ReluOp : IUnaryF
    {
        public static float Apply(float x) => x > 0 ? x : 0;
        public static Vector256<float> Apply(Vector256<float> x) =>
            Vector256.ConditionalSelect(Vector256.GreaterThan(x, Vector256<float>.Zero), x, Vector256<float>.Zero);
    }

    private struct PositiveOp : IUnaryF
    {
        public static float Apply(float x) => x > 0 ? 1 : 0;
        public static Vector256<float> Apply(Vector256<float> x) => Vector256.GreaterThan(x, Vector256<float>.Zero) & Vector256<float>.One;
    }

    private struct SiluOp : IUnaryF
    {
        public static float Apply(float x) => x / (1 + MathF.Exp(-x));
        public static Vector256<float> Apply(Vector256<float> x) => x / (Vector256<float>.One + Vector256.Exp(-x));
    }

    private struct AddOp : IBinaryF
    {
        public static float Apply(float a, float b) => a + b;
        public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => a + b;
    }

    private struct SubOp : IBinaryF
    {
        public static float Apply(float a, float b) => a - b;
        public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => a - b;
    }

    private struct MulOp : IBinaryF
    {
        public static float Apply(float a, float b) => a * b;
        public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => a * b;
    }

    private struct DivOp : IBinaryF
    {
        public static float Apply(float a, float b) => a / b;
        public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => a / b;
    }

    private struct PowOp : IBinaryF
    {
        public static float Apply(float a, float b) => MathF.Pow(a, b);
        public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b)
        {
            Span<float> r = stackalloc float[8];
            for (int l = 0; l < 8; l++) r[l] = MathF.Pow(a[l], b[l]);
            return Vector256.Create((ReadOnlySpan<float>)r);
        }
    }

    private struct MaximumOp : IBinaryF
    {
        public static float Apply(float a, float b) => float.IsNaN(a) || a > b ? a : b;
        public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) =>
            Vector256.ConditionalSelect(~Vector256.Equals(a, a) | Vector256.GreaterThan(a, b), a, b);
    }

    private struct EqualOp : IBinaryF
    {
        public static float Apply(float a, float b) => a == b ? 1 : 0;
        public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => Vector256.Equals(a, b) & Vector256<float>.One;
    }

    private struct GreaterOp : IBinaryF
    {
        public static float Apply(float a, float b) => a > b ? 1 : 0;
        public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => Vector256.GreaterThan(a, b) & Vector256<float>.One;
    }

    private struct ReluBackwardOp : IBinaryF
    {
        public static float Apply(float a, float b) => a > 0 ? b : 0;
        public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) =>
            Vector256.ConditionalSelect(Vector256.GreaterThan(a, Vector256<float>.Zero), b, Vector256<float>.Zero);
    }

    private struct SiluBackwardOp : IBinaryF
    {
        public static float Apply(float a, float b)
        {
            float s = 1 / (1 + MathF.Exp(-a));
            return s * (1 + a * (1 - s)) * b;
        }

        public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b)
        {
            var one = Vector256<float>.One;
            var s = one / (one + Vector256.Exp(-a));
            return s * (one + a * (one - s)) * b;
        }
    }

    private struct SigmoidBackwardOp : IBinaryF
    {
        public static float Apply(float a, float b) => a * (1 - a) * b;
        public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => a * (Vector256<float>.One - a) * b;
    }

    private struct TanhBackwardOp : IBinaryF
    {
        public static float Apply(float a, float b) => (1 - a * a) * b;
        public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => (Vector256<float>.One - a * a) * b;
    }

    private struct GeluBackwardOp : IBinaryF
    {
        private const float C = 0.7978845608028654f, K = 0.044715f;

        public static float Apply(float x, float b)
        {
            float t = MathF.Tanh(C * (x + K * x * x * x));
            return (0.5f * (1 + t) + 0.5f * x * (1 - t * t) * C * (1 + 3 * K * x * x)) * b;
        }

        public static Vector256<float> Apply(Vector256<float> x, Vector256<float> b)
        {
            var one = Vector256<float>.One; var half = Vector256.Create(0.5f); var c = Vector256.Create(C);
            var k = Vector256.Create(K);
            var u = c * (x + k * x * x * x);
            // tanh lane by lane with MathF.Tanh: the formula cancels, so a SIMD tanh's last-bit differences would be
            // amplified to ~1e-6 absolute; the scalar tanh keeps the result equal to the reference's.
            Span<float> tl = stackalloc float[8];
            for (int l = 0; l < 8; l++) tl[l] = MathF.Tanh(u[l]);
            var t = Vector256.Create((ReadOnlySpan<float>)tl);
            return (half * (one + t) + half * x * (one - t * t) * c * (one + Vector256.Create(3f) * k * x * x)) * b;
        }
    }

    // ------------------------------------------------------------------ span kernels

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Map<TOp>(ReadOnlySpan<float> x, Span<float> y) where TOp : struct, IUnaryF
    {
        ref float px = ref MemoryMarshal.GetReference(x);
        ref float py = ref MemoryMarshal.GetReference(y);
        int n = x.Length, i = 0;
        for (; i <= n - 8; i += 8) TOp.Apply(Vector256.LoadUnsafe(ref px, (nuint)i)).StoreUnsafe(ref py, (nuint)i);
        for (; i < n; i++) Unsafe.Add(ref py, i) = TOp.Apply(Unsafe.Add(ref px, i));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void VV<TOp>(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y) where TOp : struct, IBinaryF
    {
        ref float pa = ref MemoryMarshal.GetReference(a);
        ref float pb = ref MemoryMarshal.GetReference(b);
        ref float py = ref MemoryMarshal.GetReference(y);
        int n = y.Length, i = 0;
        for (; i <= n - 8; i += 8)
            TOp.Apply(Vector256.LoadUnsafe(ref pa, (nuint)i), Vector256.LoadUnsafe(ref pb, (nuint)i)).StoreUnsafe(ref py, (nuint)i);
        for (; i < n; i++) Unsafe.Add(ref py, i) = TOp.Apply(Unsafe.Add(ref pa, i), Unsafe.Add(ref pb, i));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void VS<TOp>(ReadOnlySpan<float> a, float b, Span<float> y) where TOp : struct, IBinaryF
    {
        ref float pa = ref MemoryMarshal.GetReference(a);
        ref float py = ref MemoryMarshal.GetReference(y);
        var vb = Vector256.Create(b);
        int n = y.Length, i = 0;
        for (; i <= n - 8; i += 8) TOp.Apply(Vector256.LoadUnsafe(ref pa, (nuint)i), vb).StoreUnsafe(ref py, (nuint)i);
        for (; i < n; i++) Unsafe.Add(ref py, i) = TOp.Apply(Unsafe.Add(ref pa, i), b);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SV<TOp>(float a, ReadOnlySpan<float> b, Span<float> y) where TOp : struct, IBinaryF
    {
        ref float pb = ref MemoryMarshal.GetReference(b);
        ref float py = ref MemoryMarshal.GetReference(y);
        var va = Vector256.Create(a);
        int n = y.Length, i = 0;
        for (; i <= n - 8; i += 8) TOp.Apply(va, Vector256.LoadUnsafe(ref pb, (nuint)i)).StoreUnsafe(ref py, (nuint)i);
        for (; i < n; i++) Unsafe.Add(ref py, i) = TOp.Apply(a, Unsafe.Add(ref pb, i));
    }

    // ------------------------------------------------------------------ broadcasting Binary

    /// <summary>How an operand addresses a [rows, inner] view of the output.</summary>
    private enum Layout { Full, Scalar, Row, Col }

    /// <summary>Whether dims [from, to) with extent &gt; 1 all have stride 0.</summary>
    private static bool ZeroStrides(int[] st, Shape sh, int from, int to)
    {
        for (int d = from; d < to; d++) if (sh[d] != 1 && st[d] != 0) return false;
        return true;
    }

    /// <summary>Whether dims [from, to) are row-major contiguous (unit stride at to − 1; extent-1 dims ignored).</summary>
    private static bool ContiguousStrides(int[] st, Shape sh, int from, int to)
    {
        long expect = 1;
        for (int d = to - 1; d >= from; d--)
        {
            if (sh[d] == 1) continue;
            if (st[d] != expect) return false;
            expect *= sh[d];
        }
        return true;
    }

    /// <inheritdoc />
    public override void Binary(BinaryOp op, Strided a, Strided b, Storage y, Shape shape)
    {
        if (y.DType != DType.Float32 || !Simd.Enabled || shape.Numel == 0) { base.Binary(op, a, b, y, shape); return; }
        int r = shape.Rank, n = shape.Numel;
        bool aFull = ContiguousStrides(a.Strides, shape, 0, r), bFull = ContiguousStrides(b.Strides, shape, 0, r);
        // y may alias an operand only position for position (AddInPlace: y is a's own contiguous storage).
        if ((ReferenceEquals(a.Storage, y) && !(aFull && a.Offset == 0)) || (ReferenceEquals(b.Storage, y) && !(bFull && b.Offset == 0)))
        {
            base.Binary(op, a, b, y, shape);
            return;
        }
        Layout la, lb; int inner = n;
        if (aFull && bFull) { la = lb = Layout.Full; }
        else if (aFull && ZeroStrides(b.Strides, shape, 0, r)) { la = Layout.Full; lb = Layout.Scalar; }
        else if (bFull && ZeroStrides(a.Strides, shape, 0, r)) { la = Layout.Scalar; lb = Layout.Full; }
        else if (aFull && Split(b.Strides, shape, out lb, out inner)) la = Layout.Full;
        else if (bFull && Split(a.Strides, shape, out la, out inner)) lb = Layout.Full;
        else { base.Binary(op, a, b, y, shape); return; }

        float[] av = A<float>(a.Storage), bv = A<float>(b.Storage), yv = A<float>(y);
        switch (op)
        {
            case BinaryOp.Add: Run<AddOp>(av, a.Offset, la, bv, b.Offset, lb, yv, n, inner); break;
            case BinaryOp.Sub: Run<SubOp>(av, a.Offset, la, bv, b.Offset, lb, yv, n, inner); break;
            case BinaryOp.Mul: Run<MulOp>(av, a.Offset, la, bv, b.Offset, lb, yv, n, inner); break;
            case BinaryOp.Div: Run<DivOp>(av, a.Offset, la, bv, b.Offset, lb, yv, n, inner); break;
            case BinaryOp.Pow: Run<PowOp>(av, a.Offset, la, bv, b.Offset, lb, yv, n, inner); break;
            case BinaryOp.Maximum: Run<MaximumOp>(av, a.Offset, la, bv, b.Offset, lb, yv, n, inner); break;
            case BinaryOp.Equal: Run<EqualOp>(av, a.Offset, la, bv, b.Offset, lb, yv, n, inner); break;
            case BinaryOp.Greater: Run<GreaterOp>(av, a.Offset, la, bv, b.Offset, lb, yv, n, inner); break;
            case BinaryOp.ReluBackward: Run<ReluBackwardOp>(av, a.Offset, la, bv, b.Offset, lb, yv, n, inner); break;
            case BinaryOp.SiluBackward: Run<SiluBackwardOp>(av, a.Offset, la, bv, b.Offset, lb, yv, n, inner); break;
            case BinaryOp.SigmoidBackwardFromOutput: Run<SigmoidBackwardOp>(av, a.Offset, la, bv, b.Offset, lb, yv, n, inner); break;
            case BinaryOp.GeluBackward: Run<GeluBackwardOp>(av, a.Offset, la, bv, b.Offset, lb, yv, n, inner); break;
            case BinaryOp.TanhBackwardFromOutput: Run<TanhBackwardOp>(av, a.Offset, la, bv, b.Offset, lb, yv, n, inner); break;
            default: base.Binary(op, a, b, y, shape); break;
        }
    }

    /// <summary>
    /// Finds a split of the output dims into [rows | inner] where the operand either repeats one contiguous row of
    /// <paramref name="inner"/> elements (Row: outer strides 0) or holds one contiguous value per row (Col: inner strides 0).
    /// </summary>
    private static bool Split(int[] st, Shape sh, out Layout layout, out int inner)
    {
        int r = sh.Rank;
        for (int k = 1; k < r; k++)
        {
            int suffix = 1;
            for (int d = k; d < r; d++) suffix *= sh[d];
            if (ZeroStrides(st, sh, 0, k) && ContiguousStrides(st, sh, k, r)) { layout = Layout.Row; inner = suffix; return true; }
            if (ContiguousStrides(st, sh, 0, k) && ZeroStrides(st, sh, k, r)) { layout = Layout.Col; inner = suffix; return true; }
        }
        layout = Layout.Full; inner = 0;
        return false;
    }

    private static void Run<TOp>(float[] a, int ao, Layout la, float[] b, int bo, Layout lb, float[] y, int n, int inner)
        where TOp : struct, IBinaryF
    {
        if (la == Layout.Full && lb == Layout.Full)
            Par.For(n, 2, (s, e) => VV<TOp>(a.AsSpan(ao + s, e - s), b.AsSpan(bo + s, e - s), y.AsSpan(s, e - s)), ElementGrain);
        else if (la == Layout.Full && lb == Layout.Scalar)
            Par.For(n, 2, (s, e) => VS<TOp>(a.AsSpan(ao + s, e - s), b[bo], y.AsSpan(s, e - s)), ElementGrain);
        else if (la == Layout.Scalar && lb == Layout.Full)
            Par.For(n, 2, (s, e) => SV<TOp>(a[ao], b.AsSpan(bo + s, e - s), y.AsSpan(s, e - s)), ElementGrain);
        else
        {
            int rows = n / inner;
            Par.For(rows, inner * 2L, (s, e) =>
            {
                for (int row = s; row < e; row++)
                {
                    int at = row * inner;
                    Span<float> yr = y.AsSpan(at, inner);
                    if (la == Layout.Full)
                    {
                        ReadOnlySpan<float> ar = a.AsSpan(ao + at, inner);
                        if (lb == Layout.Row) VV<TOp>(ar, b.AsSpan(bo, inner), yr);
                        else VS<TOp>(ar, b[bo + row], yr);
                    }
                    else
                    {
                        ReadOnlySpan<float> br = b.AsSpan(bo + at, inner);
                        if (la == Layout.Row) VV<TOp>(a.AsSpan(ao, inner), br, yr);
                        else SV<TOp>(a[ao + row], br, yr);
                    }
                }
            });
        }
    }
}
