using System.Numerics;

namespace PureMoE.Backends.Reference;

/// <summary>
/// Plain-loop implementations of every primitive: short, obviously correct, and slow. They are the oracle the
/// fast kernels are tested against, and run float64 reference computations. Methods are virtual so the fast CPU
/// backend overrides only the kernels it accelerates.
/// </summary>
public partial class ReferenceBackend : IBackend
{
    /// <summary>The array behind a host storage.</summary>
    protected static T[] A<T>(Storage s) => ((CpuStorage)s).As<T>();

    /// <inheritdoc />
    public virtual Storage Allocate(DType dtype, int length) => CpuStorage.Allocate(dtype, length);

    /// <inheritdoc />
    public virtual Storage Upload(Array data)
    {
        var copy = (Array)data.Clone();
        return new CpuStorage(copy);
    }

    /// <inheritdoc />
    public virtual void Download(Storage src, int srcOffset, Array dst, int count) =>
        Array.Copy(((CpuStorage)src).Data, srcOffset, dst, 0, count);

    /// <inheritdoc />
    public virtual void Fill(Storage dst, int offset, int count, double value)
    {
        switch (dst.DType)
        {
            case DType.Float32: A<float>(dst).AsSpan(offset, count).Fill((float)value); break;
            case DType.Float64: A<double>(dst).AsSpan(offset, count).Fill(value); break;
            case DType.Int64: A<long>(dst).AsSpan(offset, count).Fill((long)value); break;
        }
    }

    /// <summary>Calls <paramref name="visit"/> with (output index, offset in each operand) in row-major order.</summary>
    protected static void ForEachIndex(Shape shape, Strided[] operands, Action<int, int[]> visit)
    {
        int rank = shape.Rank, n = shape.Numel;
        var counter = new int[rank];
        var offsets = new int[operands.Length];
        for (int o = 0; o < operands.Length; o++) offsets[o] = operands[o].Offset;
        for (int i = 0; i < n; i++)
        {
            visit(i, offsets);
            // Advance the multi-index like an odometer, updating each operand's offset by its stride.
            for (int d = rank - 1; d >= 0; d--)
            {
                counter[d]++;
                for (int o = 0; o < operands.Length; o++) offsets[o] += operands[o].Strides[d];
                if (counter[d] < shape[d]) break;
                for (int o = 0; o < operands.Length; o++) offsets[o] -= operands[o].Strides[d] * shape[d];
                counter[d] = 0;
            }
        }
    }

    /// <inheritdoc />
    public virtual void CopyStrided(Strided src, Shape shape, Storage dst, int dstOffset)
    {
        var s = ((CpuStorage)src.Storage).Data;
        var d = ((CpuStorage)dst).Data;
        if (s.GetType() == d.GetType())
        {
            ForEachIndex(shape, [src], (i, off) => Array.Copy(s, off[0], d, dstOffset + i, 1));
            return;
        }
        // dtype conversion goes through double (exact for float32 and for int64 indices below 2^53).
        ForEachIndex(shape, [src], (i, off) => SetFromDouble(d, dstOffset + i, GetAsDouble(s, off[0])));
    }

    private static double GetAsDouble(Array a, int i) => a switch
    {
        float[] f => f[i],
        double[] f => f[i],
        long[] f => f[i],
        _ => throw new InvalidOperationException(),
    };

    private static void SetFromDouble(Array a, int i, double v)
    {
        switch (a)
        {
            case float[] f: f[i] = (float)v; break;
            case double[] f: f[i] = v; break;
            case long[] f: f[i] = (long)v; break;
        }
    }

    /// <inheritdoc />
    public virtual void Unary(UnaryOp op, Storage x, int xOffset, Storage y, int yOffset, int n, double alpha)
    {
        if (x.DType == DType.Float32) UnaryT(op, A<float>(x), xOffset, A<float>(y), yOffset, n, alpha);
        else UnaryT(op, A<double>(x), xOffset, A<double>(y), yOffset, n, alpha);
    }

    private static void UnaryT<T>(UnaryOp op, T[] x, int xo, T[] y, int yo, int n, double alpha)
        where T : IFloatingPointIeee754<T>
    {
        T a = T.CreateChecked(alpha);
        for (int i = 0; i < n; i++) y[yo + i] = UnaryScalar(op, x[xo + i], a);
    }

    /// <summary>The scalar definition of each unary op (shared by the fast backend's tails).</summary>
    public static T UnaryScalar<T>(UnaryOp op, T v, T alpha) where T : IFloatingPointIeee754<T> => op switch
    {
        UnaryOp.Neg => -v,
        UnaryOp.Exp => T.Exp(v),
        UnaryOp.Log => T.Log(v),
        UnaryOp.Sqrt => T.Sqrt(v),
        UnaryOp.Rsqrt => T.One / T.Sqrt(v),
        UnaryOp.Relu => v > T.Zero ? v : T.Zero,
        UnaryOp.Silu => v / (T.One + T.Exp(-v)),
        UnaryOp.Sigmoid => T.One / (T.One + T.Exp(-v)),
        UnaryOp.Gelu => Gelu(v),
        UnaryOp.Tanh => T.Tanh(v),
        UnaryOp.Abs => T.Abs(v),
        UnaryOp.PowScalar => T.Pow(v, alpha),
        UnaryOp.AddScalar => v + alpha,
        UnaryOp.MulScalar => v * alpha,
        UnaryOp.Positive => v > T.Zero ? T.One : T.Zero,
        _ => throw new ArgumentOutOfRangeException(nameof(op)),
    };

    // GELU, tanh form: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
    private static T Gelu<T>(T x) where T : IFloatingPointIeee754<T>
    {
        T c = T.CreateChecked(0.7978845608028654), k = T.CreateChecked(0.044715), half = T.CreateChecked(0.5);
        return half * x * (T.One + T.Tanh(c * (x + k * x * x * x)));
    }

    private static T GeluGrad<T>(T x) where T : IFloatingPointIeee754<T>
    {
        T c = T.CreateChecked(0.7978845608028654), k = T.CreateChecked(0.044715), half = T.CreateChecked(0.5);
        T three = T.CreateChecked(3);
        T t = T.Tanh(c * (x + k * x * x * x));
        return half * (T.One + t) + half * x * (T.One - t * t) * c * (T.One + three * k * x * x);
    }

    /// <summary>The scalar definition of each binary op.</summary>
    public static T BinaryScalar<T>(BinaryOp op, T a, T b) where T : IFloatingPointIeee754<T> => op switch
    {
        BinaryOp.Add => a + b,
        BinaryOp.Sub => a - b,
        BinaryOp.Mul => a * b,
        BinaryOp.Div => a / b,
        BinaryOp.Pow => T.Pow(a, b),
        BinaryOp.Maximum => T.IsNaN(a) || a > b ? a : b,
        BinaryOp.Equal => a == b ? T.One : T.Zero,
        BinaryOp.Greater => a > b ? T.One : T.Zero,
        BinaryOp.ReluBackward => a > T.Zero ? b : T.Zero,
        BinaryOp.SiluBackward => SiluGrad(a) * b,
        BinaryOp.SigmoidBackwardFromOutput => a * (T.One - a) * b,
        BinaryOp.GeluBackward => GeluGrad(a) * b,
        BinaryOp.TanhBackwardFromOutput => (T.One - a * a) * b,
        _ => throw new ArgumentOutOfRangeException(nameof(op)),
    };

    private static T SiluGrad<T>(T x) where T : IFloatingPointIeee754<T>
    {
        T s = T.One / (T.One + T.Exp(-x));
        return s * (T.One + x * (T.One - s));
    }

    /// <inheritdoc />
    public virtual void Binary(BinaryOp op, Strided a, Strided b, Storage y, Shape shape)
    {
        if (y.DType == DType.Float32) BinaryT<float>(op, a, b, y, shape);
        else BinaryT<double>(op, a, b, y, shape);
    }

    private static void BinaryT<T>(BinaryOp op, Strided a, Strided b, Storage y, Shape shape)
        where T : IFloatingPointIeee754<T>
    {
        T[] av = A<T>(a.Storage), bv = A<T>(b.Storage), yv = A<T>(y);
        ForEachIndex(shape, [a, b], (i, off) => yv[i] = BinaryScalar(op, av[off[0]], bv[off[1]]));
    }

    /// <inheritdoc />
    public virtual void Where(Strided cond, Strided a, Strided b, Storage y, Shape shape)
    {
        var c = ((CpuStorage)cond.Storage).Data;
        var av = ((CpuStorage)a.Storage).Data;
        var bv = ((CpuStorage)b.Storage).Data;
        var yv = ((CpuStorage)y).Data;
        ForEachIndex(shape, [cond, a, b], (i, off) =>
            Array.Copy(GetAsDouble(c, off[0]) != 0 ? av : bv, GetAsDouble(c, off[0]) != 0 ? off[1] : off[2], yv, i, 1));
    }

    /// <inheritdoc />
    public virtual void Reduce(ReduceOp op, Storage x, int xOffset, Storage y, int outer, int n, int inner)
    {
        if (x.DType == DType.Float32) ReduceT(op, A<float>(x), xOffset, A<float>(y), outer, n, inner);
        else ReduceT(op, A<double>(x), xOffset, A<double>(y), outer, n, inner);
    }

    private static void ReduceT<T>(ReduceOp op, T[] x, int xo, T[] y, int outer, int n, int inner)
        where T : IFloatingPointIeee754<T>
    {
        for (int o = 0; o < outer; o++)
            for (int i = 0; i < inner; i++)
            {
                T acc = op == ReduceOp.Sum ? T.Zero : T.NegativeInfinity;
                for (int j = 0; j < n; j++)
                {
                    T v = x[xo + (o * n + j) * inner + i];
                    acc = op == ReduceOp.Sum ? acc + v : (T.IsNaN(v) || v > acc ? v : acc);
                }
                y[o * inner + i] = acc;
            }
    }
}
