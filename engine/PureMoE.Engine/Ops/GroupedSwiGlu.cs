using PureMoE.Backends;

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
        var w1s = w1d.Select(w => w.Storage).ToArray();
        var w3s = w3d.Select(w => w.Storage).ToArray();
        var w2s = w2d.Select(w => w.Storage).ToArray();
        // h1 = x·W1ᵀ, h3 = x·W3ᵀ, p = silu(h1)·h3, y = p·W2ᵀ (per group).
        b.GroupedGemm(groupSizes, ff, d, 1.0, xd.Storage, w1s, true, 0.0, h1.Storage);
        b.GroupedGemm(groupSizes, ff, d, 1.0, xd.Storage, w3s, true, 0.0, h3.Storage);
        b.SwiGlu(h1.Storage, h3.Storage, p.Storage, n * ff);
        b.GroupedGemm(groupSizes, d, ff, 1.0, p.Storage, w2s, true, 0.0, y.Storage);

        Tensor[] inputs = [x, .. w1, .. w3, .. w2];
        return Record(op, y, inputs, gy =>
        {
            var gyd = gy.Dense();
            var grads = new Tensor?[inputs.Length];
            // dp and dh1 live only in this function: pooled scratch, not fresh allocations on every step.
            using var scratch = new Scratch(x.DType, x.Device);
            // dp = dy·W2 [N, ff]; dW2 = dyᵀ·p.
            var dp = scratch.Rent(new Shape(n, ff));
            b.GroupedGemm(groupSizes, ff, d, 1.0, gyd.Storage, w2s, false, 0.0, dp.Storage);
            WeightGrads(w2, 1 + 2 * groups, gyd, d, p, ff);
            // dh1 = dp·h3·silu'(h1), dh3 = dp·silu(h1) (written over dp).
            var dh1 = scratch.Rent(new Shape(n, ff));
            b.SwiGluBackward(h1.Storage, h3.Storage, dp.Storage, dh1.Storage, dp.Storage, n * ff);
            var dh3 = dp;
            if (x.RequiresGrad)
            {
                // dx = dh1·W1 + dh3·W3, the second accumulated into the first (per group).
                var dx = Empty(x.Shape, x.DType, x.Device).AsFreshGradient();
                b.GroupedGemm(groupSizes, d, ff, 1.0, dh1.Storage, w1s, false, 0.0, dx.Storage);
                b.GroupedGemm(groupSizes, d, ff, 1.0, dh3.Storage, w3s, false, 1.0, dx.Storage);
                grads[0] = dx;
            }
            WeightGrads(w1, 1, dh1, ff, xd, d);
            WeightGrads(w3, 1 + groups, dh3, ff, xd, d);
            return grads;

            // dW_g [outDim, inDim] = gᵀ·a over group g's rows of g [N, outDim] and a [N, inDim] (0 when empty), for
            // the weights that want a gradient, into grads[first + g].
            void WeightGrads(IReadOnlyList<Tensor> weights, int first, Tensor gRows, int outDim, Tensor aRows, int inDim)
            {
                var dw = new Storage?[groups];
                for (int g = 0; g < groups; g++)
                {
                    if (!weights[g].RequiresGrad) continue;
                    var t = Empty(new Shape(outDim, inDim), x.DType, x.Device).AsFreshGradient();
                    grads[first + g] = t;
                    dw[g] = t.Storage;
                }
                if (dw.Any(s => s is not null))
                    b.GroupedGemmKGrouped(groupSizes, outDim, inDim, 1.0, gRows.Storage, aRows.Storage, 0.0, dw);
            }
        }, saved: [h1, h3, p]);   // read by the backward alone: back to the pool once it has run
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
