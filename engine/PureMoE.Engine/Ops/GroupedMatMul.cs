namespace PureMoE;

// Grouped matrix product: the rows of x come in consecutive groups, and group g is multiplied by its own weight.
// This is how MoE experts run over tokens sorted by expert (MegaBlocks-style): one op over all experts, one GEMM
// per non-empty group, no per-token work.
public sealed partial class Tensor
{
    /// <summary>
    /// y[rows of group g] = x[rows of group g] · W_gᵀ, with x [N, K], each W_g [Out, K] (PyTorch Linear layout),
    /// <paramref name="groupSizes"/> summing to N; y is [N, Out]. Gradients flow to x and every W_g.
    /// </summary>
    public static Tensor GroupedMatMul(Tensor x, IReadOnlyList<Tensor> weights, int[] groupSizes)
    {
        if (x.Rank != 2) throw new ArgumentException($"GroupedMatMul: x must be [N, K], got {x.Shape}");
        if (weights.Count != groupSizes.Length)
            throw new ArgumentException($"GroupedMatMul: {weights.Count} weights for {groupSizes.Length} groups");
        if (weights.Count == 0) throw new ArgumentException("GroupedMatMul: needs at least one group");
        int n = x.Shape[0], k = x.Shape[1], outDim = weights[0].Shape[0];
        int total = 0;
        foreach (int s in groupSizes)
        {
            if (s < 0) throw new ArgumentException($"GroupedMatMul: negative group size in [{string.Join(",", groupSizes)}]");
            total += s;
        }
        if (total != n)
            throw new ArgumentException($"GroupedMatMul: group sizes [{string.Join(",", groupSizes)}] add up to {total}, but x {x.Shape} has {n} rows");
        foreach (var w in weights)
        {
            CheckSameDevice("GroupedMatMul", x, w);
            if (w.Rank != 2 || w.Shape[0] != outDim || w.Shape[1] != k || w.DType != x.DType)
                throw new ArgumentException($"GroupedMatMul: x {x.Shape} {x.DType.Name()} needs weights [{outDim},{k}] {x.DType.Name()}, got {w.Shape} {w.DType.Name()}");
        }
        var xd = x.Dense();
        var wd = weights.Select(w => w.Dense()).ToArray();
        var y = Empty(new Shape(n, outDim), x.DType, x.Device);
        var b = x.Backend;
        int row = 0;
        for (int g = 0; g < groupSizes.Length; row += groupSizes[g], g++)
        {
            if (groupSizes[g] == 0) continue;
            // y_g [m, Out] = x_g [m, K] · W_gᵀ
            b.Gemm(false, true, groupSizes[g], outDim, k, 1.0, xd.Storage, row * k, k, 0, wd[g].Storage, 0, k, 0,
                0.0, y.Storage, row * outDim, outDim, 0, 1);
        }
        Tensor[] inputs = [x, .. weights];
        return Record("GroupedMatMul", y, inputs, gy =>
        {
            var g = gy.Dense();
            var grads = new Tensor?[inputs.Length];
            Tensor? dx = x.RequiresGrad ? Empty(x.Shape, x.DType, x.Device).AsFreshGradient() : null;
            int r = 0;
            for (int i = 0; i < groupSizes.Length; r += groupSizes[i], i++)
            {
                int m = groupSizes[i];
                // dx_g [m, K] = dy_g [m, Out] · W_g [Out, K]
                if (dx is not null && m > 0)
                    b.Gemm(false, false, m, k, outDim, 1.0, g.Storage, r * outDim, outDim, 0, wd[i].Storage, 0, k, 0,
                        0.0, dx.Storage, r * k, k, 0, 1);
                if (!weights[i].RequiresGrad) continue;
                // dW_g [Out, K] = dy_gᵀ [Out, m] · x_g [m, K]  (zero for an empty group)
                var dw = (m > 0 ? Empty(weights[i].Shape, x.DType, x.Device) : Zeros(weights[i].Shape, x.DType, x.Device)).AsFreshGradient();
                if (m > 0)
                    b.Gemm(true, false, outDim, k, m, 1.0, g.Storage, r * outDim, outDim, 0, xd.Storage, r * k, k, 0,
                        0.0, dw.Storage, 0, k, 0, 1);
                grads[i + 1] = dw;
            }
            grads[0] = dx;
            return grads;
        });
    }
}
