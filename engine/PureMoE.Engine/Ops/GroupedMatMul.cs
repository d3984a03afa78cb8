namespace PureMoE;

// Grouped matrix product: the rows of x come in consecutive groups, and group g is multiplied by its own weight.
// This is how MoE experts run over tokens sorted by expert (MegaBlocks-style): one op over all experts, one GEMM
// per non-empty group (on GPUs, one grouped GEMM launch for all groups), no per-token work.
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
        var wStorages = wd.Select(w => w.Storage).ToArray();
        // y_g [m, Out] = x_g [m, K] · W_gᵀ
        b.GroupedGemm(groupSizes, outDim, k, 1.0, xd.Storage, wStorages, true, 0.0, y.Storage);
        Tensor[] inputs = [x, .. weights];
        return Record("GroupedMatMul", y, inputs, gy =>
        {
            var g = gy.Dense();
            var grads = new Tensor?[inputs.Length];
            Tensor? dx = x.RequiresGrad ? Empty(x.Shape, x.DType, x.Device).AsFreshGradient() : null;
            // dx_g [m, K] = dy_g [m, Out] · W_g [Out, K]
            if (dx is not null) b.GroupedGemm(groupSizes, k, outDim, 1.0, g.Storage, wStorages, false, 0.0, dx.Storage);
            // dW_g [Out, K] = dy_gᵀ [Out, m] · x_g [m, K]  (zero for an empty group)
            var dw = new Tensor?[groupSizes.Length];
            for (int i = 0; i < dw.Length; i++)
                if (weights[i].RequiresGrad) dw[i] = Empty(weights[i].Shape, x.DType, x.Device).AsFreshGradient();
            if (dw.Any(t => t is not null))
                b.GroupedGemmKGrouped(groupSizes, outDim, k, 1.0, g.Storage, xd.Storage, 0.0, dw.Select(t => t?.Storage).ToArray());
            dw.CopyTo(grads, 1);
            grads[0] = dx;
            return grads;
        });
    }
}
