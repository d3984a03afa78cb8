namespace PureMoE;

// Indexing: index_select / embedding, gather, scatter-add, index-add. Indices are int64 tensors and get no
// gradient; each backward is the adjoint (select ↔ add, gather ↔ scatter-add).
public sealed partial class Tensor
{
    private static void CheckIndexTensor(string op, Tensor idx)
    {
        if (idx.DType != DType.Int64) throw new ArgumentException($"{op}: indices must be int64, got {idx.DType.Name()} {idx.Shape}");
    }

    /// <summary>Selects entries <paramref name="index"/> (int64 [count]) along <paramref name="axis"/> (torch.index_select).</summary>
    public Tensor IndexSelect(int axis, Tensor index)
    {
        CheckIndexTensor("IndexSelect", index);
        CheckSameDevice("IndexSelect", this, index);
        if (index.Rank != 1) throw new ArgumentException($"IndexSelect: index must be 1-D, got {index.Shape}");
        int a = Shape.Axis(axis, "IndexSelect");
        var (outer, n, inner) = SplitAround(a);
        var shape = Shape.ToArray();
        shape[a] = index.Numel;
        var y = Empty(new Shape(shape), DType, Device);   // every element is written
        var idx = index.Dense();
        Backend.IndexSelect(Dense().Storage, idx.Storage, y.Storage, outer, n, index.Numel, inner);
        Tensor x = this;
        return Record("IndexSelect", y, [x], g =>
        {
            var gx = ZerosLike(x).AsFreshGradient();
            x.Backend.IndexAdd(gx.Storage, idx.Storage, g.Dense().Storage, outer, n, idx.Numel, inner);
            return [gx];
        });
    }

    /// <summary>Embedding lookup: rows of this [vocab, d] table for int64 ids of any shape → [..ids, d].</summary>
    public Tensor Embedding(Tensor ids)
    {
        if (Rank != 2) throw new ArgumentException($"Embedding: table must be [vocab, dim], got {Shape}");
        var rows = IndexSelect(0, ids.Reshape(ids.Numel));
        return rows.Reshape([.. ids.Shape.ToArray(), Shape[1]]);
    }

    /// <summary>
    /// torch.gather: out[..., j, ...] = x[..., index[..., j, ...], ...] along <paramref name="axis"/>; index has
    /// x's shape except along the axis.
    /// </summary>
    public Tensor Gather(int axis, Tensor index)
    {
        CheckIndexTensor("Gather", index);
        CheckSameDevice("Gather", this, index);
        int a = Shape.Axis(axis, "Gather");
        bool ok = index.Rank == Rank;
        for (int i = 0; ok && i < Rank; i++) ok = i == a || index.Shape[i] == Shape[i];
        if (!ok) throw new ArgumentException($"Gather: index {index.Shape} must match input {Shape} outside axis {axis}");
        var (outer, n, inner) = SplitAround(a);
        int count = index.Shape[a];
        var y = Empty(index.Shape, DType, Device);   // the kernel writes every element
        var idx = index.Dense();
        Backend.Gather(Dense().Storage, idx.Storage, y.Storage, outer, n, count, inner);
        Tensor x = this;
        return Record("Gather", y, [x], g =>
        {
            var gx = ZerosLike(x);
            x.Backend.ScatterAdd(gx.Storage, idx.Storage, g.Dense().Storage, outer, n, count, inner);
            return [gx];
        });
    }

    /// <summary>
    /// Out-of-place torch.scatter_add: a copy of this with src[..., j, ...] added at index[..., j, ...] along the axis.
    /// </summary>
    public Tensor ScatterAdd(int axis, Tensor index, Tensor src)
    {
        CheckIndexTensor("ScatterAdd", index);
        CheckSameDevice("ScatterAdd", this, index);
        CheckSameDevice("ScatterAdd", this, src);
        if (src.DType != DType)
            throw new ArgumentException($"ScatterAdd: src {src.Shape} {src.DType.Name()} differs in dtype from input {Shape} {DType.Name()}");
        int a = Shape.Axis(axis, "ScatterAdd");
        if (index.Shape != src.Shape || index.Rank != Rank)
            throw new ArgumentException($"ScatterAdd: index {index.Shape} and src {src.Shape} must have one shape, of rank {Rank}");
        for (int i = 0; i < Rank; i++)
            if (i != a && index.Shape[i] != Shape[i])
                throw new ArgumentException($"ScatterAdd: index {index.Shape} must match input {Shape} outside axis {axis}");
        var (outer, n, inner) = SplitAround(a);
        int count = index.Shape[a];
        var y = Clone().Detach();
        var idx = index.Dense();
        Backend.ScatterAdd(y.Storage, idx.Storage, src.Dense().Storage, outer, n, count, inner);
        return Record("ScatterAdd", y, [this, src], g => [g, g.Gather(a, idx)]);
    }

    /// <summary>
    /// Out-of-place torch.index_add: a copy of this with slice j of src added at position index[j] along the axis.
    /// </summary>
    public Tensor IndexAdd(int axis, Tensor index, Tensor src)
    {
        CheckIndexTensor("IndexAdd", index);
        CheckSameDevice("IndexAdd", this, index);
        CheckSameDevice("IndexAdd", this, src);
        if (src.DType != DType)
            throw new ArgumentException($"IndexAdd: src {src.Shape} {src.DType.Name()} differs in dtype from input {Shape} {DType.Name()}");
        int a = Shape.Axis(axis, "IndexAdd");
        if (index.Rank != 1 || src.Rank != Rank || src.Shape[a] != index.Numel)
            throw new ArgumentException($"IndexAdd: src {src.Shape} needs rank {Rank} and {index.Numel} entries along axis {axis} (index {index.Shape})");
        for (int i = 0; i < Rank; i++)
            if (i != a && src.Shape[i] != Shape[i])
                throw new ArgumentException($"IndexAdd: src {src.Shape} must match input {Shape} outside axis {axis}");
        var (outer, n, inner) = SplitAround(a);
        var y = Clone().Detach();
        var idx = index.Dense();
        Backend.IndexAdd(y.Storage, idx.Storage, src.Dense().Storage, outer, n, index.Numel, inner);
        return Record("IndexAdd", y, [this, src], g => [g, g.IndexSelect(a, idx)]);
    }

    /// <summary>
    /// The MoE combine as one op: out[t, :] = Σ_j weights[t, j] · rows[index[t, j], :] (summed in j order), with rows
    /// [N, d], index int64 [T, m] (−1: no row; each row is read by at most one (t, j)) and weights [T, m]; out is
    /// [T, d] (a token without rows gets 0). Differentiable in rows and weights. On host devices the index is checked
    /// (an entry below −1 or past N, or a row read twice, throws); on other devices it is trusted as built by the
    /// dispatch layout, since checking would copy it to the host and wait for the device on every call (the
    /// kernels treat an out-of-range entry like −1).
    /// </summary>
    public static Tensor WeightedGatherSum(Tensor rows, Tensor index, Tensor weights)
    {
        const string op = "WeightedGatherSum";
        CheckIndexTensor(op, index);
        CheckSameDevice(op, rows, index);
        CheckSameDevice(op, rows, weights);
        if (rows.Rank != 2) throw new ArgumentException($"{op}: rows must be [N, d], got {rows.Shape}");
        if (index.Rank != 2 || weights.Shape != index.Shape)
            throw new ArgumentException($"{op}: index {index.Shape} and weights {weights.Shape} must both be [T, m]");
        if (weights.DType != rows.DType)
            throw new ArgumentException($"{op}: weights {weights.Shape} {weights.DType.Name()} differ in dtype from rows {rows.Shape} {rows.DType.Name()}");
        int tokens = index.Shape[0], m = index.Shape[1], rowCount = rows.Shape[0], d = rows.Shape[1];
        var idx = index.Dense();
        if (index.Device.IsHost)
        {
            var seen = new bool[rowCount];
            foreach (long r in idx.ToArray<long>())
            {
                if (r < -1 || r >= rowCount) throw new IndexOutOfRangeException($"{op}: index {r} is out of range for {rowCount} rows");
                if (r < 0) continue;
                if (seen[r]) throw new ArgumentException($"{op}: row {r} is read by more than one (token, slot) of index {index.Shape}");
                seen[r] = true;
            }
        }
        var rd = rows.Dense();
        var wd = weights.Dense();
        var y = Empty(new Shape(tokens, d), rows.DType, rows.Device);
        rows.Backend.WeightedGatherSum(rd.Storage, idx.Storage, wd.Storage, y.Storage, tokens, m, d, rowCount);
        return Record(op, y, [rows, weights], g =>
        {
            var dRows = rows.RequiresGrad ? Empty(rows.Shape, rows.DType, rows.Device).AsFreshGradient() : null;
            var dW = weights.RequiresGrad ? Empty(weights.Shape, weights.DType, weights.Device).AsFreshGradient() : null;
            rows.Backend.WeightedGatherSumBackward(rd.Storage, idx.Storage, wd.Storage, g.Dense().Storage, dRows?.Storage, dW?.Storage,
                tokens, m, d, rowCount);
            return [dRows, dW];
        });
    }
}
