namespace PureMoE;

// Shape changes. Reshape, permute, narrow, expand, (un)squeeze are views sharing storage where possible;
// concat copies. Each backward maps the gradient back to the input's layout.
public sealed partial class Tensor
{
    /// <summary>A view with a new shape (one dimension may be −1: inferred). Copies only if not contiguous.</summary>
    public Tensor Reshape(params int[] shape)
    {
        var dims = (int[])shape.Clone();
        int infer = Array.IndexOf(dims, -1), known = 1;
        for (int i = 0; i < dims.Length; i++) if (i != infer) known *= dims[i];
        if (infer >= 0)
        {
            if (known == 0 || Numel % known != 0)
                throw new ArgumentException($"Reshape: cannot infer -1 in [{string.Join(",", shape)}] for {Shape}");
            dims[infer] = Numel / known;
        }
        var s = new Shape(dims);
        if (s.Numel != Numel)
            throw new ArgumentException($"Reshape: {Shape} ({Numel} elements) cannot become {s} ({s.Numel} elements)");
        if (s == Shape) return this;
        Tensor x = Contiguous();
        var y = new Tensor(x.Storage, s, s.ContiguousStrides(), x.Offset, Device);
        Shape from = Shape;
        return Record("Reshape", y, [x], g => [g.Reshape(from.ToArray())]);
    }

    /// <summary>A view with the dimensions reordered: result dim i is input dim <paramref name="dims"/>[i].</summary>
    public Tensor Permute(params int[] dims)
    {
        if (dims.Length != Rank || dims.Select(d => Shape.Axis(d, "Permute")).Distinct().Count() != Rank)
            throw new ArgumentException($"Permute: [{string.Join(",", dims)}] is not a permutation of the {Rank} dims of {Shape}");
        var norm = dims.Select(d => Shape.Axis(d, "Permute")).ToArray();
        var shape = new int[Rank];
        var strides = new int[Rank];
        var inverse = new int[Rank];
        for (int i = 0; i < Rank; i++)
        {
            shape[i] = Shape[norm[i]];
            strides[i] = Strides[norm[i]];
            inverse[norm[i]] = i;
        }
        var y = new Tensor(Storage, new Shape(shape), strides, Offset, Device);
        return Record("Permute", y, [this], g => [g.Permute(inverse)]);
    }

    /// <summary>Swaps two dimensions (a view).</summary>
    public Tensor Transpose(int dim0, int dim1)
    {
        var p = Enumerable.Range(0, Rank).ToArray();
        int a = Shape.Axis(dim0, "Transpose"), b = Shape.Axis(dim1, "Transpose");
        (p[a], p[b]) = (p[b], p[a]);
        return Permute(p);
    }

    /// <summary>The transpose of the last two dimensions (a view).</summary>
    public Tensor T => Transpose(-2, -1);

    /// <summary>Inserts a dimension of size 1 at <paramref name="axis"/>.</summary>
    public Tensor Unsqueeze(int axis)
    {
        int a = axis < 0 ? axis + Rank + 1 : axis;
        if (a < 0 || a > Rank) throw new ArgumentException($"Unsqueeze: axis {axis} out of range for {Shape}");
        var d = Shape.ToArray().ToList();
        d.Insert(a, 1);
        return Reshape([.. d]);
    }

    /// <summary>Removes a dimension of size 1.</summary>
    public Tensor Squeeze(int axis)
    {
        int a = Shape.Axis(axis, "Squeeze");
        if (Shape[a] != 1) throw new ArgumentException($"Squeeze: dimension {axis} of {Shape} is {Shape[a]}, not 1");
        var d = Shape.ToArray().ToList();
        d.RemoveAt(a);
        return Reshape([.. d]);
    }

    /// <summary>A broadcast view to <paramref name="shape"/> (size-1 dims repeat with stride 0; no copy).</summary>
    public Tensor Expand(Shape shape)
    {
        if (shape == Shape) return this;
        Shape check = Shape.Broadcast(Shape, shape, "Expand");
        if (check != shape) throw new ArgumentException($"Expand: {Shape} cannot be expanded to {shape}");
        var s = AsStrided(shape);
        var y = new Tensor(Storage, shape, s.Strides, Offset, Device);
        Shape from = Shape;
        return Record("Expand", y, [this], g => [g.SumToShape(from)]);
    }

    /// <summary>The slice [start, start+length) along <paramref name="axis"/> (a view).</summary>
    public Tensor Narrow(int axis, int start, int length)
    {
        int a = Shape.Axis(axis, "Narrow");
        if (start < 0 || length < 0 || start + length > Shape[a])
            throw new ArgumentException($"Narrow: [{start}, {start + length}) is outside dimension {axis} of {Shape} (size {Shape[a]})");
        var shape = Shape.ToArray();
        shape[a] = length;
        var y = new Tensor(Storage, new Shape(shape), Strides, Offset + start * Strides[a], Device);
        Tensor x = this;
        return Record("Narrow", y, [x], g =>
        {
            // Place g into zeros of the input's shape: an index-add of rows start..start+length along the axis.
            var gx = ZerosLike(x);
            var (outer, n, inner) = x.SplitAround(a);
            var idx = ArangeFrom(start, length, x.Device);
            x.Backend.IndexAdd(gx.Storage, idx.Storage, g.Dense().Storage, outer, n, length, inner);
            return [gx];
        });
    }

    /// <summary>start, start + 1, …, start + count − 1 as int64 on <paramref name="device"/> (one upload).</summary>
    internal static Tensor ArangeFrom(int start, int count, Device device)
    {
        var data = new long[count];
        for (int i = 0; i < count; i++) data[i] = start + i;
        return FromHost(data, [count], device);
    }

    /// <summary>Concatenates tensors along <paramref name="axis"/>; all other dimensions must agree.</summary>
    public static Tensor Concat(IReadOnlyList<Tensor> tensors, int axis)
    {
        if (tensors.Count == 0) throw new ArgumentException("Concat: no tensors");
        Tensor first = tensors[0];
        int a = first.Shape.Axis(axis, "Concat");
        int total = 0;
        foreach (var t in tensors)
        {
            CheckSameDevice("Concat", first, t);
            bool ok = t.Rank == first.Rank && t.DType == first.DType;
            for (int i = 0; ok && i < t.Rank; i++) ok = i == a || t.Shape[i] == first.Shape[i];
            if (!ok)
                throw new ArgumentException($"Concat: {string.Join(" and ", tensors.Select(x => x.Shape + " " + x.DType.Name()))} differ outside axis {axis}");
            total += t.Shape[a];
        }
        var shape = first.Shape.ToArray();
        shape[a] = total;
        var outShape = new Shape(shape);
        int outer = 1, inner = 1;
        for (int i = 0; i < a; i++) outer *= shape[i];
        for (int i = a + 1; i < shape.Length; i++) inner *= shape[i];
        // Along the first non-unit axis (rows of a matrix, the tokens of several devices) each piece is one
        // contiguous block of the result: one strided copy each. Otherwise the pieces interleave, and each is added
        // into zeros at its positions (IndexAdd).
        bool blocks = outer == 1;
        var y = blocks ? Empty(outShape, first.DType, first.Device) : Zeros(outShape, first.DType, first.Device);
        int start = 0;
        foreach (var t in tensors)
        {
            int len = t.Shape[a];
            if (len > 0 && blocks)
                first.Backend.CopyStrided(t.AsStrided(t.Shape), t.Shape, y.Storage, start * inner);
            else if (len > 0)
                first.Backend.IndexAdd(y.Storage, ArangeFrom(start, len, first.Device).Storage, t.Dense().Storage, outer, total, len, inner);
            start += len;
        }
        var lengths = tensors.Select(t => t.Shape[a]).ToArray();
        return Record("Concat", y, [.. tensors], g =>
        {
            var grads = new Tensor?[lengths.Length];
            int s = 0;
            for (int i = 0; i < lengths.Length; i++) { grads[i] = g.Narrow(a, s, lengths[i]).Contiguous(); s += lengths[i]; }
            return grads;
        });
    }

    /// <summary>Splits along <paramref name="axis"/> into pieces of the given sizes (views).</summary>
    public Tensor[] Split(int[] sizes, int axis)
    {
        int a = Shape.Axis(axis, "Split");
        if (sizes.Sum() != Shape[a])
            throw new ArgumentException($"Split: sizes [{string.Join(",", sizes)}] do not add up to dimension {axis} of {Shape}");
        var parts = new Tensor[sizes.Length];
        int start = 0;
        for (int i = 0; i < sizes.Length; i++) { parts[i] = Narrow(a, start, sizes[i]); start += sizes[i]; }
        return parts;
    }

    /// <summary>cond ≠ 0 ? a : b elementwise (all broadcast). cond is a mask (float or int64) and gets no gradient.</summary>
    public static Tensor Where(Tensor cond, Tensor a, Tensor b)
    {
        CheckSameDevice("Where", a, b);
        CheckSameDevice("Where", cond, a);
        if (a.DType != b.DType) throw new ArgumentException($"Where: dtypes differ ({a.DType.Name()} and {b.DType.Name()})");
        Shape shape = Shape.Broadcast(Shape.Broadcast(cond.Shape, a.Shape, "Where"), b.Shape, "Where");
        var y = Empty(shape, a.DType, a.Device);   // the kernel writes every element
        a.Backend.Where(cond.AsStrided(shape), a.AsStrided(shape), b.AsStrided(shape), y.Storage, shape);
        return Record("Where", y, [a, b], g =>
        {
            var zero = ZerosLike(g);
            return [Where(cond, g, zero).SumToShape(a.Shape), Where(cond, zero, g).SumToShape(b.Shape)];
        });
    }
}
