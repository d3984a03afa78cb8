using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>A unary elementwise function: one struct per <see cref="UnaryOp"/>, the type argument of the one unary kernel.</summary>
public interface IUnaryOp
{
    /// <summary>op(x) with scalar parameter alpha.</summary>
    float Apply(float x, float alpha);
}

/// <summary>A binary elementwise function: one struct per <see cref="BinaryOp"/>, the type argument of the one binary kernel.</summary>
public interface IBinaryOp
{
    /// <summary>op(a, b).</summary>
    float Apply(float a, float b);
}

#pragma warning disable CS1591 // the op structs are named after the enum members they implement
public struct NegOp : IUnaryOp { public readonly float Apply(float x, float alpha) => -x; }
public struct ExpOp : IUnaryOp { public readonly float Apply(float x, float alpha) => XMath.Exp(x); }
public struct LogOp : IUnaryOp { public readonly float Apply(float x, float alpha) => XMath.Log(x); }
public struct SqrtOp : IUnaryOp { public readonly float Apply(float x, float alpha) => XMath.Sqrt(x); }
public struct RsqrtOp : IUnaryOp { public readonly float Apply(float x, float alpha) => 1f / XMath.Sqrt(x); }
public struct ReluOp : IUnaryOp { public readonly float Apply(float x, float alpha) => x > 0f ? x : 0f; }
public struct SiluOp : IUnaryOp { public readonly float Apply(float x, float alpha) => x / (1f + XMath.Exp(-x)); }
public struct SigmoidOp : IUnaryOp { public readonly float Apply(float x, float alpha) => 1f / (1f + XMath.Exp(-x)); }
public struct GeluOp : IUnaryOp { public readonly float Apply(float x, float alpha) => Act.Gelu(x); }
public struct TanhOp : IUnaryOp { public readonly float Apply(float x, float alpha) => Act.Tanh(x); }
public struct AbsOp : IUnaryOp { public readonly float Apply(float x, float alpha) => XMath.Abs(x); }
public struct PowScalarOp : IUnaryOp { public readonly float Apply(float x, float alpha) => XMath.Pow(x, alpha); }
public struct AddScalarOp : IUnaryOp { public readonly float Apply(float x, float alpha) => x + alpha; }
public struct MulScalarOp : IUnaryOp { public readonly float Apply(float x, float alpha) => x * alpha; }
public struct PositiveOp : IUnaryOp { public readonly float Apply(float x, float alpha) => x > 0f ? 1f : 0f; }

public struct AddOp : IBinaryOp { public readonly float Apply(float a, float b) => a + b; }
public struct SubOp : IBinaryOp { public readonly float Apply(float a, float b) => a - b; }
public struct MulOp : IBinaryOp { public readonly float Apply(float a, float b) => a * b; }
public struct DivOp : IBinaryOp { public readonly float Apply(float a, float b) => a / b; }
public struct PowOp : IBinaryOp { public readonly float Apply(float a, float b) => XMath.Pow(a, b); }
public struct MaximumOp : IBinaryOp { public readonly float Apply(float a, float b) => XMath.IsNaN(a) || a > b ? a : b; }
public struct EqualOp : IBinaryOp { public readonly float Apply(float a, float b) => a == b ? 1f : 0f; }
public struct GreaterOp : IBinaryOp { public readonly float Apply(float a, float b) => a > b ? 1f : 0f; }
public struct ReluBackwardOp : IBinaryOp { public readonly float Apply(float a, float b) => a > 0f ? b : 0f; }
public struct SiluBackwardOp : IBinaryOp { public readonly float Apply(float a, float b) => Act.SiluGrad(a) * b; }
public struct SigmoidBackwardFromOutputOp : IBinaryOp { public readonly float Apply(float a, float b) => a * (1f - a) * b; }
public struct GeluBackwardOp : IBinaryOp { public readonly float Apply(float a, float b) => Act.GeluGrad(a) * b; }
public struct TanhBackwardFromOutputOp : IBinaryOp { public readonly float Apply(float a, float b) => (1f - a * a) * b; }
#pragma warning restore CS1591

/// <summary>Scalar activation helpers shared by the op structs (same formulas as the reference backend).</summary>
internal static class Act
{
    private const float C = 0.7978845608028654f, K = 0.044715f;

    public static float Gelu(float x) => 0.5f * x * (1f + Tanh(C * (x + K * x * x * x)));

    public static float GeluGrad(float x)
    {
        float t = Tanh(C * (x + K * x * x * x));
        return 0.5f * (1f + t) + 0.5f * x * (1f - t * t) * C * (1f + 3f * K * x * x);
    }

    /// <summary>
    /// tanh to within 3e-7 relative (IlgpuMathTests), from exp alone. Not XMath.Tanh: ILGPU's PTX backend compiles
    /// that to <c>tanh.approx.f32</c>, whose error (about 2^-11, ~5e-4) is far from float precision, and the CPU
    /// emulator to MathF.Tanh, so only a GPU would show it. Below 0.625 an odd polynomial in x² (Cephes' tanhf
    /// coefficients); above, 1 − 2/(e^{2|x|} + 1), which no longer cancels there. NaN, ±0 and ±∞ come out as tanh's.
    /// </summary>
    public static float Tanh(float x)
    {
        float a = XMath.Abs(x);
        if (a < 0.625f)
        {
            float z = x * x;
            float p = (((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z
                      - 3.33332819422e-1f;
            return x * (1f + z * p); // x · (…), not x + x·z·p: that turns −0 into +0
        }
        float r = 1f - 2f / (XMath.Exp(2f * a) + 1f);
        return x < 0f ? -r : r;
    }

    public static float SiluGrad(float x)
    {
        float s = 1f / (1f + XMath.Exp(-x));
        return s * (1f + x * (1f - s));
    }
}

internal static partial class IlgpuKernels
{
    [IlgpuKernel]
    public static void Unary<TOp>(Index1D i, ArrayView<float> x, ArrayView<float> y, float alpha) where TOp : struct, IUnaryOp =>
        y[i] = default(TOp).Apply(x[i], alpha);

    [IlgpuKernel]
    public static void Binary<TOp>(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, StridedArgs p)
        where TOp : struct, IBinaryOp
    {
        p.Offsets2(i, out int oa, out int ob);
        y[i] = default(TOp).Apply(a[oa], b[ob]);
    }

    [IlgpuKernel]
    public static void WhereFloatCond<T>(Index1D i, ArrayView<float> c, ArrayView<T> a, ArrayView<T> b, ArrayView<T> y, StridedArgs p)
        where T : unmanaged
    {
        p.Offsets3(i, out int oc, out int oa, out int ob);
        y[i] = c[oc] != 0f ? a[oa] : b[ob];
    }

    [IlgpuKernel]
    public static void WhereLongCond<T>(Index1D i, ArrayView<long> c, ArrayView<T> a, ArrayView<T> b, ArrayView<T> y, StridedArgs p)
        where T : unmanaged
    {
        p.Offsets3(i, out int oc, out int oa, out int ob);
        y[i] = c[oc] != 0L ? a[oa] : b[ob];
    }
}

public sealed partial class IlgpuBackend
{
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, float>?[] _unary = new Action<Index1D, ArrayView<float>, ArrayView<float>, float>?[Enum.GetValues<UnaryOp>().Length];
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, StridedArgs>?[] _binary = new Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, StridedArgs>?[Enum.GetValues<BinaryOp>().Length];

    private Action<Index1D, ArrayView<float>, ArrayView<float>, float> LoadUnary<TOp>() where TOp : struct, IUnaryOp =>
        Auto<ArrayView<float>, ArrayView<float>, float>(IlgpuKernels.Unary<TOp>);

    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, StridedArgs> LoadBinary<TOp>() where TOp : struct, IBinaryOp =>
        Auto<ArrayView<float>, ArrayView<float>, ArrayView<float>, StridedArgs>(IlgpuKernels.Binary<TOp>);

    private Action<Index1D, ArrayView<float>, ArrayView<float>, float> UnaryKernel(UnaryOp op) => Cached(ref _unary[(int)op], () => op switch
    {
        UnaryOp.Neg => LoadUnary<NegOp>(),
        UnaryOp.Exp => LoadUnary<ExpOp>(),
        UnaryOp.Log => LoadUnary<LogOp>(),
        UnaryOp.Sqrt => LoadUnary<SqrtOp>(),
        UnaryOp.Rsqrt => LoadUnary<RsqrtOp>(),
        UnaryOp.Relu => LoadUnary<ReluOp>(),
        UnaryOp.Silu => LoadUnary<SiluOp>(),
        UnaryOp.Sigmoid => LoadUnary<SigmoidOp>(),
        UnaryOp.Gelu => LoadUnary<GeluOp>(),
        UnaryOp.Tanh => LoadUnary<TanhOp>(),
        UnaryOp.Abs => LoadUnary<AbsOp>(),
        UnaryOp.PowScalar => LoadUnary<PowScalarOp>(),
        UnaryOp.AddScalar => LoadUnary<AddScalarOp>(),
        UnaryOp.MulScalar => LoadUnary<MulScalarOp>(),
        UnaryOp.Positive => LoadUnary<PositiveOp>(),
        _ => throw new ArgumentOutOfRangeException(nameof(op), op, "Unary: unknown op"),
    }, $"unary {op}");

    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, StridedArgs> BinaryKernel(BinaryOp op) => Cached(ref _binary[(int)op], () => op switch
    {
        BinaryOp.Add => LoadBinary<AddOp>(),
        BinaryOp.Sub => LoadBinary<SubOp>(),
        BinaryOp.Mul => LoadBinary<MulOp>(),
        BinaryOp.Div => LoadBinary<DivOp>(),
        BinaryOp.Pow => LoadBinary<PowOp>(),
        BinaryOp.Maximum => LoadBinary<MaximumOp>(),
        BinaryOp.Equal => LoadBinary<EqualOp>(),
        BinaryOp.Greater => LoadBinary<GreaterOp>(),
        BinaryOp.ReluBackward => LoadBinary<ReluBackwardOp>(),
        BinaryOp.SiluBackward => LoadBinary<SiluBackwardOp>(),
        BinaryOp.SigmoidBackwardFromOutput => LoadBinary<SigmoidBackwardFromOutputOp>(),
        BinaryOp.GeluBackward => LoadBinary<GeluBackwardOp>(),
        BinaryOp.TanhBackwardFromOutput => LoadBinary<TanhBackwardFromOutputOp>(),
        _ => throw new ArgumentOutOfRangeException(nameof(op), op, "Binary: unknown op"),
    }, $"binary {op}");

    /// <inheritdoc />
    public void Unary(UnaryOp op, Storage x, int xOffset, Storage y, int yOffset, int n, double alpha)
    {
        if (n == 0) return;
        UnaryKernel(op)(n, F(x, "Unary").SubView(xOffset, n), F(y, "Unary").SubView(yOffset, n), (float)alpha);
    }

    /// <inheritdoc />
    public void Binary(BinaryOp op, Strided a, Strided b, Storage y, Shape shape)
    {
        int n = shape.Numel;
        if (n == 0) return;
        var args = StridedArgs.Create(shape, "Binary", a, b);
        BinaryKernel(op)(n, F(a.Storage, "Binary"), F(b.Storage, "Binary"), F(y, "Binary").SubView(0, n), args);
    }

    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, StridedArgs>? _whereFF;
    private Action<Index1D, ArrayView<float>, ArrayView<long>, ArrayView<long>, ArrayView<long>, StridedArgs>? _whereFL;
    private Action<Index1D, ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<float>, StridedArgs>? _whereLF;
    private Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, ArrayView<long>, StridedArgs>? _whereLL;

    /// <inheritdoc />
    public void Where(Strided cond, Strided a, Strided b, Storage y, Shape shape)
    {
        int n = shape.Numel;
        if (n == 0) return;
        var args = StridedArgs.Create(shape, "Where", cond, a, b);
        var c = S(cond.Storage, "Where");
        var ys = S(y, "Where");
        if (S(a.Storage, "Where").DType != ys.DType || S(b.Storage, "Where").DType != ys.DType)
            throw new ArgumentException($"Where: operand dtypes {a.Storage.DType.Name()}, {b.Storage.DType.Name()} differ from the output's {ys.DType.Name()}");
        bool longCond = c.DType == DType.Int64;
        if (ys.DType == DType.Float32)
        {
            if (longCond)
                Cached(ref _whereLF, () => Auto<ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<float>, StridedArgs>(IlgpuKernels.WhereLongCond))(
                    n, c.L, F(a.Storage, "Where"), F(b.Storage, "Where"), ys.F.SubView(0, n), args);
            else
                Cached(ref _whereFF, () => Auto<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, StridedArgs>(IlgpuKernels.WhereFloatCond))(
                    n, c.F, F(a.Storage, "Where"), F(b.Storage, "Where"), ys.F.SubView(0, n), args);
        }
        else
        {
            if (longCond)
                Cached(ref _whereLL, () => Auto<ArrayView<long>, ArrayView<long>, ArrayView<long>, ArrayView<long>, StridedArgs>(IlgpuKernels.WhereLongCond))(
                    n, c.L, L(a.Storage, "Where"), L(b.Storage, "Where"), ys.L.SubView(0, n), args);
            else
                Cached(ref _whereFL, () => Auto<ArrayView<float>, ArrayView<long>, ArrayView<long>, ArrayView<long>, StridedArgs>(IlgpuKernels.WhereFloatCond))(
                    n, c.F, L(a.Storage, "Where"), L(b.Storage, "Where"), ys.L.SubView(0, n), args);
        }
    }
}
