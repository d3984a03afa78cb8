namespace PureMoE;

// SwiGLU experts over grouped rows as one op: y_g = (silu(x_g·W1_gᵀ) ⊙ x_g·W3_gᵀ)·W2_gᵀ for each consecutive group
// g of rows. The same as three GroupedMatMul calls with Silu and Mul between them, but with one graph node: the
// elementwise part is one fused pass each way, and the two input-gradient products are accumulated in place
// (no separate gradient for each and no add).
public sealed partial class Tensor
{
    /// <summary>
    /// Grouped SwiGLU: x [N, d], groups of consecutive rows (<paramref name="groupSizes"/> summing to N), and per group
    /// W1_g, W3_g [ff, d] and W2_g [d, ff] (PyTorch Linear layout); returns y [N, d] with
    /// y_g = (silu(x_g·W1_gᵀ) ⊙ (x_g·W3_gᵀ))·W2_gᵀ. Gradients flow to x and every weight.
    /// </summary>
    public static Tensor GroupedSwiGlu(Tensor x, IReadOnlyList<Tensor> w1, IReadOnlyList<Tensor> w3, IReadOnlyList<Tensor> w2, int[] groupSizes)
    {
        const string op = "GroupedSwiGlu";
        if (x.Rank != 2) throw new ArgumentException($"{op}: x must be [N, d], got {x.Shape}");
        int groups = groupSizes.Length;
        if (groups == 0) throw new ArgumentException($"{op}: needs at least one group");
        if (w1.Count != groups || w3.Count != groups || w2.Count != groups)
            throw new ArgumentException($"{op}: {w1.Count}/{w3.Count}/{w2.Count} weights (w1/w3/w2) for {groups} groups");
        int n = x.Shape[0], d = x.Shape[1], ff = w1[0].Shape[0];
        int total = 0;
        foreach (int s in groupSizes)
        {
            if (s < 0) throw new ArgumentException($"{op}: negative group size in [{string.Join(",", groupSizes)}]");
            total += s;
        }
        if (total != n)
            throw new ArgumentException($"{op}: group sizes [{string.Join(",", groupSizes)}] add up to {total}, but x {x.Shape} has {n} rows");
        void Check(Tensor w, int rows, int cols, string name)
        {
            CheckSameDevice(op, x, w);
            if (w.Rank != 2 || w.Shape[0] != rows || w.Shape[1] != cols || w.DType != x.DType)
                throw new ArgumentException($"{op}: x {x.Shape} {x.DType.Name()} needs {name} [{rows},{cols}] {x.DType.Name()}, got {w.Shape} {w.DType.Name()}");
        }
        for (int g = 0; g < groups; g++)
        {
            Check(w1[g], ff, d, "w1");
            Check(w3[g], ff, d, "w3");
            Check(w2[g], d, ff, "w2");
        }

        var b = x.Backend;
        var xd = x.Dense();
        var w1d = w1.Select(w => w.Dense()).ToArray();
        var w3d = w3.Select(w => w.Dense()).ToArray();
        var w2d = w2.Select(w => w.Dense()).ToArray();
        var h1 = Empty(new Shape(n, ff), x.DType, x.Device);
        var h3 = Empty(new Shape(n, ff), x.DType, x.Device);
        var p = Empty(new Shape(n, ff), x.DType, x.Device);
        var y = Empty(new Shape(n, d), x.DType, x.Device);
        int row = 0;
        for (int g = 0; g < groups; row += groupSizes[g], g++)
        {
            int m = groupSizes[g];
            if (m == 0) continue;
            b.Gemm(false, true, m, ff, d, 1.0, xd.Storage, row * d, d, 0, w1d[g].Storage, 0, d, 0, 0.0, h1.Storage, row * ff, ff, 0, 1);
            b.Gemm(false, true, m, ff, d, 1.0, xd.Storage, row * d, d, 0, w3d[g].Storage, 0, d, 0, 0.0, h3.Storage, row * ff, ff, 0, 1);
        }
        b.SwiGlu(h1.Storage, h3.Storage, p.Storage, n * ff);
        row = 0;
        for (int g = 0; g < groups; row += groupSizes[g], g++)
        {
            int m = groupSizes[g];
            if (m == 0) continue;
            b.Gemm(false, true, m, d, ff, 1.0, p.Storage, row * ff, ff, 0, w2d[g].Storage, 0, ff, 0, 0.0, y.Storage, row * d, d, 0, 1);
        }

        Tensor[] inputs = [x, .. w1, .. w3, .. w2];
        return Record(op, y, inputs, gy =>
        {
            var gyd = gy.Dense();
            var grads = new Tensor?[inputs.Length];
            // dp and dh1 live only in this function: pooled scratch, not fresh allocations on every step.
            using var scratch = new Scratch(x.DType, x.Device);
            // dp = dy·W2 [N, ff]; dW2 = dyᵀ·p.
            var dp = scratch.Rent(new Shape(n, ff));
            int r = 0;
            for (int g = 0; g < groups; r += groupSizes[g], g++)
            {
                int m = groupSizes[g];
                if (m > 0)
                    b.Gemm(false, false, m, ff, d, 1.0, gyd.Storage, r * d, d, 0, w2d[g].Storage, 0, ff, 0, 0.0, dp.Storage, r * ff, ff, 0, 1);
                if (w2[g].RequiresGrad) grads[1 + 2 * groups + g] = WeightGrad(gyd, r, m, d, p, ff);
            }
            // dh1 = dp·h3·silu'(h1), dh3 = dp·silu(h1) (written over dp).
            var dh1 = scratch.Rent(new Shape(n, ff));
            b.SwiGluBackward(h1.Storage, h3.Storage, dp.Storage, dh1.Storage, dp.Storage, n * ff);
            var dh3 = dp;
            Tensor? dx = x.RequiresGrad ? Empty(x.Shape, x.DType, x.Device).AsFreshGradient() : null;
            r = 0;
            for (int g = 0; g < groups; r += groupSizes[g], g++)
            {
                int m = groupSizes[g];
                if (dx is not null && m > 0)
                {
                    // dx_g = dh1_g·W1_g + dh3_g·W3_g, the second accumulated into the first.
                    b.Gemm(false, false, m, d, ff, 1.0, dh1.Storage, r * ff, ff, 0, w1d[g].Storage, 0, d, 0, 0.0, dx.Storage, r * d, d, 0, 1);
                    b.Gemm(false, false, m, d, ff, 1.0, dh3.Storage, r * ff, ff, 0, w3d[g].Storage, 0, d, 0, 1.0, dx.Storage, r * d, d, 0, 1);
                }
                if (w1[g].RequiresGrad) grads[1 + g] = WeightGrad(dh1, r, m, ff, xd, d);
                if (w3[g].RequiresGrad) grads[1 + groups + g] = WeightGrad(dh3, r, m, ff, xd, d);
            }
            grads[0] = dx;
            return grads;
        });

        // dW [outDim, inDim] = gᵀ·a over the group's rows [r, r+m) of g [N, outDim] and a [N, inDim] (0 when empty).
        Tensor WeightGrad(Tensor gRows, int r0, int m, int outDim, Tensor aRows, int inDim)
        {
            if (m == 0) return Zeros(new Shape(outDim, inDim), x.DType, x.Device).AsFreshGradient();
            var dw = Empty(new Shape(outDim, inDim), x.DType, x.Device).AsFreshGradient();
                b.Gemm(true, false, outDim, inDim, m, 1.0, gRows.Storage, r0 * outDim, outDim, 0, aRows.Storage, r0 * inDim, inDim, 0,
                    0.0, dw.Storage, 0, inDim, 0, 1);
            return dw;
        }
    }

    /// <summary>
    /// Temporary buffers that never escape one function: on host devices, float32 arrays rented from the shared
    /// array pool (contents unspecified) and returned on Dispose; elsewhere plain allocations.
    /// </summary>
    private sealed class Scratch(DType dtype, Device device) : IDisposable
    {
        private readonly List<float[]> _rented = [];

        public Tensor Rent(Shape shape)
        {
            if (!device.IsHost || dtype != DType.Float32) return Empty(shape, dtype, device);
            var array = System.Buffers.ArrayPool<float>.Shared.Rent(shape.Numel);
            _rented.Add(array);
            return new Tensor(new Backends.CpuStorage(array), shape, device);
        }

        public void Dispose()
        {
            foreach (var a in _rented) System.Buffers.ArrayPool<float>.Shared.Return(a);
            _rented.Clear();
        }
    }
}
