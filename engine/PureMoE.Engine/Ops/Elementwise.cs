using PureMoE.Backends;

namespace PureMoE;

// Arithmetic with NumPy broadcasting. Each op's backward sits beside its forward; a broadcast input's gradient is
// summed back to the input's shape (SumToShape).
public sealed partial class Tensor
{
    /// <summary>Runs a broadcasting binary kernel into a new tensor (no recording).</summary>
    internal static Tensor BinaryKernel(BinaryOp op, Tensor a, Tensor b, string name)
    {
        CheckSameDevice(name, a, b);
        if (a.DType != b.DType)
            throw new ArgumentException($"{name}: dtypes differ ({a.DType.Name()} {a.Shape} and {b.DType.Name()} {b.Shape})");
        if (!a.DType.IsFloatingPoint())
            throw new ArgumentException($"{name}: needs floating-point tensors, got {a.DType.Name()}");
        Shape shape = Shape.Broadcast(a.Shape, b.Shape, name);
        var y = Empty(shape, a.DType, a.Device);
        a.Backend.Binary(op, a.AsStrided(shape), b.AsStrided(shape), y.Storage, shape);
        return y;
    }

    /// <summary>Runs a unary kernel into a new tensor (no recording).</summary>
    internal static Tensor UnaryKernel(UnaryOp op, Tensor x, double alpha = 0)
    {
        if (!x.DType.IsFloatingPoint())
            throw new ArgumentException($"{op}: needs a floating-point tensor, got {x.DType.Name()} {x.Shape}");
        var c = x.Contiguous();
        var y = Empty(x.Shape, x.DType, x.Device);
        x.Backend.Unary(op, c.Storage, c.Offset, y.Storage, 0, x.Numel, alpha);
        return y;
    }

    /// <summary>a + b (broadcast).</summary>
    public Tensor Add(Tensor b)
    {
        Tensor a = this;
        return Record("Add", BinaryKernel(BinaryOp.Add, a, b, "Add"), [a, b],
            g => [g.SumToShape(a.Shape), g.SumToShape(b.Shape)]);
    }

    /// <summary>a − b (broadcast).</summary>
    public Tensor Sub(Tensor b)
    {
        Tensor a = this;
        return Record("Sub", BinaryKernel(BinaryOp.Sub, a, b, "Sub"), [a, b],
            g => [g.SumToShape(a.Shape), g.Neg().SumToShape(b.Shape)]);
    }

    /// <summary>a · b elementwise (broadcast).</summary>
    public Tensor Mul(Tensor b)
    {
        Tensor a = this;
        return Record("Mul", BinaryKernel(BinaryOp.Mul, a, b, "Mul"), [a, b], g => [
            a.RequiresGrad ? g.Mul(b).SumToShape(a.Shape) : null,
            b.RequiresGrad ? g.Mul(a).SumToShape(b.Shape) : null]);
    }

    /// <summary>a / b elementwise (broadcast).</summary>
    public Tensor Div(Tensor b)
    {
        Tensor a = this;
        var y = BinaryKernel(BinaryOp.Div, a, b, "Div");
        // d(a/b)/da = 1/b; d(a/b)/db = −a/b² = −y/b.
        return Record("Div", y, [a, b], g => [
            a.RequiresGrad ? g.Div(b).SumToShape(a.Shape) : null,
            b.RequiresGrad ? g.Mul(y).Div(b).Neg().SumToShape(b.Shape) : null]);
    }

    /// <summary>a^b elementwise (broadcast).</summary>
    public Tensor Pow(Tensor b)
    {
        Tensor a = this;
        var y = BinaryKernel(BinaryOp.Pow, a, b, "Pow");
        // d/da = b·a^(b−1); d/db = y·ln a.
        return Record("Pow", y, [a, b], g => [
            a.RequiresGrad ? g.Mul(b).Mul(a.Pow(b.AddScalar(-1))).SumToShape(a.Shape) : null,
            b.RequiresGrad ? g.Mul(y).Mul(a.Log()).SumToShape(b.Shape) : null]);
    }

    /// <summary>max(a, b) elementwise (broadcast); the gradient goes to a where a ≥ b, else to b.</summary>
    public Tensor Maximum(Tensor b)
    {
        Tensor a = this;
        var y = BinaryKernel(BinaryOp.Maximum, a, b, "Maximum");
        return Record("Maximum", y, [a, b], g =>
        {
            var aWins = BinaryKernel(BinaryOp.Equal, y, a, "Maximum");
            return [g.Mul(aWins).SumToShape(a.Shape), g.Mul(aWins.RSubScalar(1)).SumToShape(b.Shape)];
        });
    }

    /// <summary>−x.</summary>
    public Tensor Neg() => Record("Neg", UnaryKernel(UnaryOp.Neg, this), [this], g => [g.Neg()]);

    /// <summary>x + c.</summary>
    public Tensor AddScalar(double c) => Record("AddScalar", UnaryKernel(UnaryOp.AddScalar, this, c), [this], g => [g]);

    /// <summary>x · c.</summary>
    public Tensor MulScalar(double c) => Record("MulScalar", UnaryKernel(UnaryOp.MulScalar, this, c), [this], g => [g.MulScalar(c)]);

    /// <summary>c − x.</summary>
    public Tensor RSubScalar(double c) => Neg().AddScalar(c);

    /// <summary>x^p for a constant exponent p.</summary>
    public Tensor PowScalar(double p)
    {
        Tensor x = this;
        return Record("PowScalar", UnaryKernel(UnaryOp.PowScalar, x, p), [x], g => [g.Mul(x.PowScalar(p - 1)).MulScalar(p)]);
    }

    /// <summary>x² (the elementwise square).</summary>
    public Tensor Square() => Mul(this);

    /// <summary>eˣ.</summary>
    public Tensor Exp()
    {
        var y = UnaryKernel(UnaryOp.Exp, this);
        return Record("Exp", y, [this], g => [g.Mul(y)]);
    }

    /// <summary>ln x.</summary>
    public Tensor Log()
    {
        Tensor x = this;
        return Record("Log", UnaryKernel(UnaryOp.Log, x), [x], g => [g.Div(x)]);
    }

    /// <summary>√x.</summary>
    public Tensor Sqrt()
    {
        var y = UnaryKernel(UnaryOp.Sqrt, this);
        return Record("Sqrt", y, [this], g => [g.Div(y).MulScalar(0.5)]);
    }

    /// <summary>1/√x.</summary>
    public Tensor Rsqrt()
    {
        Tensor x = this;
        var y = UnaryKernel(UnaryOp.Rsqrt, x);
        // d/dx x^(−1/2) = −½·x^(−3/2) = −½·y³.
        return Record("Rsqrt", y, [x], g => [g.Mul(y.PowScalar(3)).MulScalar(-0.5)]);
    }

    /// <summary>|x| (gradient sign(x), 0 at 0).</summary>
    public Tensor Abs()
    {
        Tensor x = this;
        return Record("Abs", UnaryKernel(UnaryOp.Abs, x), [x], g =>
            [g.Mul(UnaryKernel(UnaryOp.Positive, x).Sub(UnaryKernel(UnaryOp.Positive, x.Neg())))]);
    }

    /// <summary>a + b.</summary>
    public static Tensor operator +(Tensor a, Tensor b) => a.Add(b);
    /// <summary>a − b.</summary>
    public static Tensor operator -(Tensor a, Tensor b) => a.Sub(b);
    /// <summary>a · b elementwise.</summary>
    public static Tensor operator *(Tensor a, Tensor b) => a.Mul(b);
    /// <summary>a / b elementwise.</summary>
    public static Tensor operator /(Tensor a, Tensor b) => a.Div(b);
    /// <summary>−a.</summary>
    public static Tensor operator -(Tensor a) => a.Neg();
    /// <summary>a + c.</summary>
    public static Tensor operator +(Tensor a, double c) => a.AddScalar(c);
    /// <summary>a − c.</summary>
    public static Tensor operator -(Tensor a, double c) => a.AddScalar(-c);
    /// <summary>a · c.</summary>
    public static Tensor operator *(Tensor a, double c) => a.MulScalar(c);
    /// <summary>c · a.</summary>
    public static Tensor operator *(double c, Tensor a) => a.MulScalar(c);
    /// <summary>a / c.</summary>
    public static Tensor operator /(Tensor a, double c) => a.MulScalar(1.0 / c);

    /// <summary>1 where a == b else 0 (broadcast; a mask, no gradient).</summary>
    public Tensor Eq(Tensor b) => BinaryKernel(BinaryOp.Equal, this, b, "Eq");

    /// <summary>1 where a &gt; b else 0 (broadcast; a mask, no gradient).</summary>
    public Tensor Gt(Tensor b) => BinaryKernel(BinaryOp.Greater, this, b, "Gt");
}
