namespace PureMoE;

// Matrix products: [..., m, k] @ [..., k, n] with broadcast batch dimensions. Transposed views are passed to the
// GEMM kernel as transpose flags, so the backward (g·Bᵀ, Aᵀ·g) makes no copies.
public sealed partial class Tensor
{
    /// <summary>
    /// Matrix product over the last two dimensions, batch dimensions broadcast (like torch.matmul for rank ≥ 2).
    /// </summary>
    public Tensor MatMul(Tensor b)
    {
        Tensor a = this;
        CheckSameDevice("MatMul", a, b);
        if (a.Rank < 2 || b.Rank < 2)
            throw new ArgumentException($"MatMul: {a.Shape} x {b.Shape}: both operands need at least 2 dimensions");
        if (a.DType != b.DType || !a.DType.IsFloatingPoint())
            throw new ArgumentException($"MatMul: {a.Shape} {a.DType.Name()} x {b.Shape} {b.DType.Name()}: needs matching float dtypes");
        int m = a.Shape[-2], k = a.Shape[-1], k2 = b.Shape[-2], n = b.Shape[-1];
        if (k != k2)
            throw new ArgumentException($"MatMul: {a.Shape} x {b.Shape}: inner dimensions {k} and {k2} differ");

        // A [.., m, k] times a plain matrix B [k, n]: fold the batch into the rows, one large GEMM. A view that cannot
        // fold (the hidden states without their last position, before a tied lm_head) is copied first: A's size,
        // where the unfolded backward would make a [batch, k, n] temporary for dB (206 MB at 16 × 64 tokens and
        // GPT-2's 50,257-token vocabulary) and sum it over the batch.
        if (b.Rank == 2 && a.Rank > 2 && !a.IsContiguous) return a.Contiguous().MatMul(b);
        Tensor y;
        bool folded = b.Rank == 2 && a.Rank > 2;
        if (folded)
        {
            var a2 = a.Reshape(-1, k);
            y = Empty(new Shape(a2.Shape[0], n), a.DType, a.Device);
            RunGemm(a2, b, y, 1);
            var outShape = a.Shape.ToArray();
            outShape[^1] = n;
            y = new Tensor(y.Storage, new Shape(outShape), Device);
        }
        else
        {
            var batchA = a.Shape.ToArray()[..^2];
            var batchB = b.Shape.ToArray()[..^2];
            Shape batch = Shape.Broadcast(new Shape(batchA), new Shape(batchB), $"MatMul: {a.Shape} x {b.Shape} batch");
            var aE = a.Expand(new Shape([.. batch.ToArray(), m, k]));
            var bE = b.Expand(new Shape([.. batch.ToArray(), k, n]));
            y = Empty(new Shape([.. batch.ToArray(), m, n]), a.DType, a.Device);
            RunGemm(aE, bE, y, batch.Numel);
        }
        return Record("MatMul", y, [a, b], g => [
            a.RequiresGrad ? g.MatMul(b.T).SumToShape(a.Shape).AsFreshGradient() : null,
            b.RequiresGrad ? WeightGradient(a, g, b.Shape, folded).AsFreshGradient() : null]);
    }

    /// <summary>
    /// y = x·Wᵀ for x [..., in] and a weight W [out, in] (torch.nn.functional.linear without a bias): every row of x
    /// times the weight in one GEMM. Its backward computes dW = dYᵀ·x straight into a new [out, in] buffer, which the
    /// weight keeps as its gradient with no copy (x.MatMul(W.T) would give the weight a transposed view to copy).
    /// </summary>
    public Tensor Linear(Tensor weight)
    {
        CheckSameDevice("Linear", this, weight);
        if (weight.Rank != 2 || Rank < 1 || Shape[-1] != weight.Shape[1])
            throw new ArgumentException($"Linear: input {Shape} and weight {weight.Shape}: needs an input [..., in] and a weight [out, in]");
        if (weight.DType != DType || !DType.IsFloatingPoint())
            throw new ArgumentException($"Linear: input {Shape} {DType.Name()} and weight {weight.Shape} {weight.DType.Name()} need one float dtype");
        int inF = weight.Shape[1], outF = weight.Shape[0];
        int rows = Shape.ToArray()[..^1].Aggregate(1, (p, d) => p * d);
        var x2 = Rows(Dense(), rows, inF);
        var y2 = Empty(new Shape(rows, outF), DType, Device);
        RunGemm(x2, weight.T, y2, 1);
        var outShape = Shape.ToArray();
        outShape[^1] = outF;
        var y = new Tensor(y2.Storage, new Shape(outShape), Device);
        Tensor x = this;
        return Record("Linear", y, [x, weight], g =>
        {
            var g2 = Rows(g.Dense(), rows, outF);
            Tensor? dx = null, dw = null;
            if (x.RequiresGrad)
            {
                var dx2 = Empty(new Shape(rows, inF), x.DType, x.Device);
                RunGemm(g2, weight, dx2, 1);                          // dX = dY·W
                dx = new Tensor(dx2.Storage, x.Shape, x.Device).AsFreshGradient();
            }
            if (weight.RequiresGrad)
            {
                dw = Empty(weight.Shape, weight.DType, weight.Device);
                RunGemm(g2.T, x2, dw, 1);                              // dW = dYᵀ·X, [out, in] as the weight
                dw.AsFreshGradient();
            }
            return [dx, dw];
        });
    }

    // A contiguous tensor viewed as a [rows, cols] matrix (its storage from offset 0).
    private static Tensor Rows(Tensor dense, int rows, int cols) => new(dense.Storage, new Shape(rows, cols), dense.Device);

    /// <summary>
    /// dB of y = A·B: Aᵀ·dY summed over A's batch dimensions. When the forward folded A's batch into its rows (B a
    /// plain matrix), so does this: one GEMM of [k, rows]·[rows, n] reduces over every row at once, instead of a
    /// batched product into a [batch, k, n] temporary and a sum over the batch.
    /// </summary>
    private static Tensor WeightGradient(Tensor a, Tensor g, Shape bShape, bool folded)
    {
        if (!folded) return a.T.MatMul(g).SumToShape(bShape);
        int k = a.Shape[-1], n = g.Shape[-1];
        return a.Reshape(-1, k).T.MatMul(g.Reshape(-1, n));
    }

    /// <summary>
    /// The GEMM operand form of a [batch..., rows, cols] view: its storage, offset, leading dimension, transpose
    /// flag and batch stride. Falls back to a dense copy when the view is neither row- nor column-major or its
    /// batch dimensions cannot be walked with one stride.
    /// </summary>
    private static (Tensor T, int Ld, bool Trans, int BatchStride) GemmOperand(Tensor t)
    {
        int r = t.Rank, rows = t.Shape[r - 2], cols = t.Shape[r - 1];
        int sRow = t.Strides[r - 2], sCol = t.Strides[r - 1];
        bool trans;
        int ld;
        if (sCol == 1 || cols == 1) { trans = false; ld = rows > 1 ? sRow : Math.Max(cols, 1); }
        else if (sRow == 1 || rows == 1) { trans = true; ld = cols > 1 ? sCol : Math.Max(rows, 1); }
        else return DenseOperand(t);

        // Batch dims must collapse to one stride: walking batch item p is offset p·stride.
        int batchStride = 0, prevStride = 0, prevSize = 0;
        bool first = true;
        for (int i = r - 3; i >= 0; i--)
        {
            if (t.Shape[i] == 1) continue;
            if (first) { batchStride = t.Strides[i]; first = false; }
            else if (t.Strides[i] != prevStride * prevSize) return DenseOperand(t);
            prevStride = t.Strides[i];
            prevSize = t.Shape[i];
        }
        return (t, ld, trans, batchStride);
    }

    private static (Tensor T, int Ld, bool Trans, int BatchStride) DenseOperand(Tensor t)
    {
        int rows = t.Shape[-2], cols = t.Shape[-1];
        return (t.Dense(), Math.Max(cols, 1), false, rows * cols);
    }

    // C = A·B (beta 0) or C += A·B (beta 1), for `batch` products of [m, k]·[k, n] into row-major [m, n] blocks of C
    // from C's offset (a block of rows of a larger buffer, for LinearCrossEntropy).
    private static void RunGemm(Tensor a, Tensor b, Tensor c, int batch = 1, double beta = 0)
    {
        int m = a.Shape[-2], k = a.Shape[-1], n = b.Shape[-1];
        var (ta, lda, transA, sa) = GemmOperand(a);
        var (tb, ldb, transB, sb) = GemmOperand(b);
        a.Backend.Gemm(transA, transB, m, n, k, 1.0, ta.Storage, ta.Offset, lda, sa, tb.Storage, tb.Offset, ldb, sb,
            beta, c.Storage, c.Offset, n, m * n, batch);
    }
}
