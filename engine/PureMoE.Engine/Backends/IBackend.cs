namespace PureMoE.Backends;

/// <summary>Elementwise functions of one input (alpha is the scalar of the parameterised ones).</summary>
public enum UnaryOp
{
    /// <summary>−x</summary>
    Neg,
    /// <summary>eˣ</summary>
    Exp,
    /// <summary>ln x</summary>
    Log,
    /// <summary>√x</summary>
    Sqrt,
    /// <summary>1/√x</summary>
    Rsqrt,
    /// <summary>max(x, 0)</summary>
    Relu,
    /// <summary>x·σ(x)</summary>
    Silu,
    /// <summary>σ(x) = 1/(1+e⁻ˣ)</summary>
    Sigmoid,
    /// <summary>GELU, tanh approximation (PyTorch's gelu(approximate="tanh")).</summary>
    Gelu,
    /// <summary>tanh x</summary>
    Tanh,
    /// <summary>|x|</summary>
    Abs,
    /// <summary>x^alpha</summary>
    PowScalar,
    /// <summary>x + alpha</summary>
    AddScalar,
    /// <summary>x · alpha</summary>
    MulScalar,
    /// <summary>1 where x &gt; 0 else 0 (a mask; no gradient).</summary>
    Positive,
}

/// <summary>Elementwise functions of two broadcast inputs a, b.</summary>
public enum BinaryOp
{
    /// <summary>a + b</summary>
    Add,
    /// <summary>a − b</summary>
    Sub,
    /// <summary>a · b</summary>
    Mul,
    /// <summary>a / b</summary>
    Div,
    /// <summary>a^b</summary>
    Pow,
    /// <summary>max(a, b)</summary>
    Maximum,
    /// <summary>1 where a == b else 0</summary>
    Equal,
    /// <summary>1 where a &gt; b else 0</summary>
    Greater,
    /// <summary>relu'(a)·b: the relu backward, a = input, b = upstream gradient.</summary>
    ReluBackward,
    /// <summary>silu'(a)·b</summary>
    SiluBackward,
    /// <summary>σ'·b from the output a = σ(x): a(1−a)·b</summary>
    SigmoidBackwardFromOutput,
    /// <summary>gelu'(a)·b (tanh approximation)</summary>
    GeluBackward,
    /// <summary>tanh'·b from the output a = tanh(x): (1−a²)·b</summary>
    TanhBackwardFromOutput,
}

/// <summary>Reductions along one axis.</summary>
public enum ReduceOp
{
    /// <summary>Σ</summary>
    Sum,
    /// <summary>max</summary>
    Max,
}

/// <summary>A strided view of a storage: the operand form of broadcasting kernels (stride 0 on broadcast dims).</summary>
/// <param name="Storage">The buffer.</param>
/// <param name="Offset">Element offset of the first element.</param>
/// <param name="Strides">One stride per output dimension (aligned to the output's rank).</param>
public readonly record struct Strided(Storage Storage, int Offset, int[] Strides);

/// <summary>
/// Where the rows of a RoPE input or output [outer, seq, dim] lie in its buffer, outer being batch × heads: row
/// (o, p) of batch o / Heads, head o mod Heads, position p starts at element
/// (o / Heads)·BatchStride + (o mod Heads)·HeadStride + p·SeqStride, and its dim elements are contiguous. So attention
/// can rotate the heads of a projection's [B, S, H, D] output into [B, H, S, D] (and the backward back) without a
/// separate transposing copy.
/// </summary>
/// <param name="Heads">Heads per batch entry, at least 1 (1 for a plain [outer, seq, dim] buffer).</param>
/// <param name="BatchStride">Elements between batch entries.</param>
/// <param name="HeadStride">Elements between heads of one batch entry.</param>
/// <param name="SeqStride">Elements between positions.</param>
public readonly record struct RopeLayout(int Heads, int BatchStride, int HeadStride, int SeqStride)
{
    /// <summary>Heads per batch entry (at least 1).</summary>
    public int Heads { get; init; } = Heads >= 1 ? Heads : throw new ArgumentOutOfRangeException(nameof(Heads), Heads, "RopeLayout: at least one head per batch entry");

    /// <summary>The contiguous layout of [outer, seq, dim].</summary>
    public static RopeLayout Dense(int seq, int dim) => new(1, seq * dim, 0, dim);

    /// <summary>First element of row (o, p).</summary>
    public int Row(int o, int p) => o / Heads * BatchStride + o % Heads * HeadStride + p * SeqStride;
}

/// <summary>
/// The primitive kernels every device implements. Everything in the engine (ops, autograd, nn, optimizers) is
/// written in terms of these. Unless a parameter says otherwise, buffers are contiguous and row-major; outputs are
/// written, never accumulated into, except by the *Add kernels. The reference backend implements each with plain
/// loops (the test oracle); faster backends override them.
/// </summary>
public interface IBackend
{
    /// <summary>A zero-filled buffer.</summary>
    Storage Allocate(DType dtype, int length);

    /// <summary>
    /// A buffer whose contents are unspecified, for outputs a kernel writes entirely (saves <see cref="Allocate"/>'s
    /// fill). The default zero-fills; device backends override it.
    /// </summary>
    Storage AllocateUninitialized(DType dtype, int length) => Allocate(dtype, length);

    /// <summary>Copies a host array (float[], double[] or long[]) into a new buffer.</summary>
    Storage Upload(Array data);

    /// <summary>Copies <paramref name="count"/> elements from a buffer into a host array.</summary>
    void Download(Storage src, int srcOffset, Array dst, int count);

    /// <summary>dst[offset .. offset+count) = value.</summary>
    void Fill(Storage dst, int offset, int count, double value);

    /// <summary>Gathers a strided view of shape <paramref name="shape"/> into contiguous dst (also converts dtype).</summary>
    void CopyStrided(Strided src, Shape shape, Storage dst, int dstOffset);

    /// <summary>y[i] = op(x[i]) for n elements.</summary>
    void Unary(UnaryOp op, Storage x, int xOffset, Storage y, int yOffset, int n, double alpha);

    /// <summary>y = op(a, b) with a, b broadcast to <paramref name="shape"/>; y contiguous at offset 0.</summary>
    void Binary(BinaryOp op, Strided a, Strided b, Storage y, Shape shape);

    /// <summary>y = cond ≠ 0 ? a : b, all three broadcast to <paramref name="shape"/>.</summary>
    void Where(Strided cond, Strided a, Strided b, Storage y, Shape shape);

    /// <summary>x viewed as [outer, n, inner] reduced over n into y [outer, inner].</summary>
    void Reduce(ReduceOp op, Storage x, int xOffset, Storage y, int outer, int n, int inner);

    /// <summary>
    /// Batched GEMM, row-major: C_i = alpha·op(A_i)·op(B_i) + beta·C_i for i &lt; batch, op(X) = Xᵀ when trans.
    /// lda/ldb/ldc are row strides; strideA/B/C the distance between batch items (0 broadcasts an operand).
    /// </summary>
    void Gemm(bool transA, bool transB, int m, int n, int k, double alpha,
        Storage a, int aOffset, int lda, int strideA,
        Storage b, int bOffset, int ldb, int strideB,
        double beta, Storage c, int cOffset, int ldc, int strideC, int batch);

    /// <summary>
    /// Row-grouped GEMM (MoE experts, forward and input gradients): the rows of A [M, K] and C [M, N] (contiguous,
    /// offset 0, M = Σ <paramref name="groupSizes"/>) come in consecutive groups, and group g is multiplied by its own
    /// matrix: C_g = alpha·A_g·op(B_g) + beta·C_g, with B_g [N, K] when <paramref name="transB"/> (op = transpose, a
    /// Linear weight) else [K, N]. Empty groups are skipped. The default runs one <see cref="Gemm"/> per non-empty
    /// group, in group order; GPU backends run all groups in one launch.
    /// </summary>
    void GroupedGemm(int[] groupSizes, int n, int k, double alpha, Storage a, Storage[] b, bool transB, double beta, Storage c)
    {
        GroupedGemmLoops.Rows(this, groupSizes, n, k, alpha, a, b, transB, beta, c);
    }

    /// <summary>
    /// K-grouped GEMM (MoE weight gradients): A [R, M] and B [R, N] (contiguous, offset 0, R = Σ
    /// <paramref name="groupSizes"/>) come in consecutive groups of rows, and each group is reduced into its own
    /// output: C_g [M, N] = alpha·A_gᵀ·B_g + beta·C_g. A null C_g skips its group; an empty group gets C_g = beta·C_g
    /// (zeros when beta is 0). The default runs one <see cref="Gemm"/> per group with an output, in group order; GPU
    /// backends run all groups in one launch.
    /// </summary>
    void GroupedGemmKGrouped(int[] groupSizes, int m, int n, double alpha, Storage a, Storage b, double beta, Storage?[] c)
    {
        GroupedGemmLoops.KGrouped(this, groupSizes, m, n, alpha, a, b, beta, c);
    }

    /// <summary>
    /// Row softmax (or log-softmax) of x [rows, n] into y. With causalQuery &gt; 0 the rows are query positions
    /// (row r is query r mod causalQuery) and column j is masked when j &gt; (r mod causalQuery) + n − causalQuery:
    /// its probability is 0 (log-probability −∞).
    /// </summary>
    void Softmax(Storage x, Storage y, int rows, int n, bool log, int causalQuery);

    /// <summary>
    /// dx from y = softmax(x) (or log-softmax) and dy, rows of n. With causalQuery &gt; 0 (the mask of
    /// <see cref="Softmax"/>) only the unmasked columns are read, in y and in dy, and masked columns of dx are 0: a
    /// caller may leave the masked part of dy unwritten.
    /// </summary>
    void SoftmaxBackward(Storage y, Storage dy, Storage dx, int rows, int n, bool log, int causalQuery);

    /// <summary>y = x / rms(x) · w over rows of n; rstd[r] = 1/√(mean(x²)+eps) is saved for the backward.</summary>
    void RmsNorm(Storage x, Storage w, Storage y, Storage rstd, int rows, int n, double eps);

    /// <summary>dx (written) and dw (written: Σ over rows) of RMSNorm.</summary>
    void RmsNormBackward(Storage x, Storage w, Storage rstd, Storage dy, Storage dx, Storage dw, int rows, int n);

    /// <summary>index_select: dst[o, j, i] = src[o, idx[j], i]; src is [outer, axisLen, inner], idx int64 [count].</summary>
    void IndexSelect(Storage src, Storage idx, Storage dst, int outer, int axisLen, int count, int inner);

    /// <summary>index_add: dst[o, idx[j], i] += src[o, j, i], in order of j (deterministic).</summary>
    void IndexAdd(Storage dst, Storage idx, Storage src, int outer, int axisLen, int count, int inner);

    /// <summary>torch.gather: dst[o, j, i] = src[o, idx[o, j, i], i]; src [outer, axisLen, inner], idx [outer, count, inner].</summary>
    void Gather(Storage src, Storage idx, Storage dst, int outer, int axisLen, int count, int inner);

    /// <summary>scatter_add (the gather backward): dst[o, idx[o, j, i], i] += src[o, j, i], in order of j.</summary>
    void ScatterAdd(Storage dst, Storage idx, Storage src, int outer, int axisLen, int count, int inner);

    /// <summary>The k largest of each row of x [rows, n], descending; ties keep the lower index first.</summary>
    void TopK(Storage x, Storage values, Storage indices, int rows, int n, int k);

    /// <summary>Stable argsort of each row of x [rows, n] into int64 indices.</summary>
    void ArgSort(Storage x, Storage indices, int rows, int n, bool descending);

    /// <summary>
    /// Cross-entropy of each row of logits x [rows, n] against int64 targets [rows]: loss[r] = log Σⱼ e^{x[r, j]} −
    /// x[r, t_r] and counted[r] = 1, or both 0 where t_r = ignoreIndex; logSumExp[r] keeps log Σⱼ e^{x[r, j]} for the
    /// backward. A target outside [0, n) that is not ignored reads its logit as 0 (GPU index kernels check nothing).
    /// </summary>
    void CrossEntropyRows(Storage x, Storage targets, long ignoreIndex, Storage loss, Storage counted, Storage logSumExp, int rows, int n);

    /// <summary>
    /// The backward of <see cref="CrossEntropyRows"/> for the gradient g [rows] of each row's loss:
    /// dx[r, j] = g[r]·(e^{x[r, j] − logSumExp[r]} − [j = t_r]), and 0 in ignored rows.
    /// </summary>
    void CrossEntropyRowsBackward(Storage x, Storage targets, long ignoreIndex, Storage logSumExp, Storage g, Storage dx, int rows, int n);

    /// <summary>
    /// Rotary position embedding, rotate-half convention (as in Hugging Face Llama/Mixtral), on x [outer, seq, dim]
    /// with cos/sin tables [seq, dim/2]: y₁ = x₁cos − x₂sin, y₂ = x₂cos + x₁sin for the halves x₁, x₂.
    /// inverse rotates by −θ (the backward). x and y lie in their buffers as their layouts say (they must not overlap).
    /// </summary>
    void Rope(Storage x, RopeLayout xLayout, Storage cos, Storage sin, Storage y, RopeLayout yLayout, int outer, int seq, int dim, bool inverse);

    /// <summary>
    /// SwiGLU's elementwise part: y[i] = silu(gate[i]) · up[i] for n elements (contiguous, offset 0). The default
    /// composes <see cref="Unary"/> and <see cref="Binary"/>; backends override it with one fused pass.
    /// </summary>
    void SwiGlu(Storage gate, Storage up, Storage y, int n)
    {
        using var s = Allocate(gate.DType, n);
        Unary(UnaryOp.Silu, gate, 0, s, 0, n, 0);
        var shape = new Shape(n);
        Binary(BinaryOp.Mul, new Strided(s, 0, [1]), new Strided(up, 0, [1]), y, shape);
    }

    /// <summary>
    /// The backward of <see cref="SwiGlu"/>: dGate = dy · up · silu'(gate), dUp = dy · silu(gate), n elements.
    /// dUp may be the same buffer as dy (each element is read before it is written). The default composes
    /// <see cref="Unary"/> and <see cref="Binary"/>.
    /// </summary>
    void SwiGluBackward(Storage gate, Storage up, Storage dy, Storage dGate, Storage dUp, int n)
    {
        var shape = new Shape(n);
        Strided V(Storage x) => new(x, 0, [1]);
        using var t = Allocate(gate.DType, n);
        Binary(BinaryOp.Mul, V(dy), V(up), t, shape);                       // dy·up
        Binary(BinaryOp.SiluBackward, V(gate), V(t), dGate, shape);         // silu'(gate)·dy·up
        Unary(UnaryOp.Silu, gate, 0, t, 0, n, 0);                            // silu(gate)
        Binary(BinaryOp.Mul, V(dy), V(t), dUp, shape);                       // dy·silu(gate)
    }

    /// <summary>
    /// The MoE combine: out[t, :] = Σ_j w[t, j] · rows[index[t, j], :] for t &lt; tokens, j &lt; m, summed in j order;
    /// index is int64 [tokens, m] with −1 for "no row" (skipped); rows [rowCount, d], out [tokens, d] (written).
    /// </summary>
    void WeightedGatherSum(Storage rows, Storage index, Storage w, Storage output, int tokens, int m, int d, int rowCount)
    {
        var ix = new long[tokens * m];
        Download(index, 0, ix, ix.Length);
        Fill(output, 0, tokens * d, 0);
        using var tmp = Allocate(rows.DType, d);
        using var sum = Allocate(rows.DType, d);
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < m; j++)
            {
                long r = ix[t * m + j];
                if (r < 0) continue;
                if (r >= rowCount) throw new IndexOutOfRangeException($"WeightedGatherSum: row {r} outside [0, {rowCount})");
                // out[t] += w[t, j] · rows[r]
                Binary(BinaryOp.Mul, new Strided(rows, (int)r * d, [1]), new Strided(w, t * m + j, [0]), tmp, new Shape(d));
                Binary(BinaryOp.Add, new Strided(output, t * d, [1]), new Strided(tmp, 0, [1]), sum, new Shape(d));
                CopyStrided(new Strided(sum, 0, [1]), new Shape(d), output, t * d);
            }
    }

    /// <summary>
    /// The backward of <see cref="WeightedGatherSum"/> given dOut [tokens, d]: dRows[index[t, j], :] = w[t, j] · dOut[t, :]
    /// (dRows [rowCount, d] is written; rows no pair reads get 0; each row is read by at most one pair) and
    /// dW[t, j] = Σ_i dOut[t, i] · rows[index[t, j], i] (0 where index is −1). Either output may be null.
    /// </summary>
    void WeightedGatherSumBackward(Storage rows, Storage index, Storage w, Storage dOut, Storage? dRows, Storage? dW,
        int tokens, int m, int d, int rowCount)
    {
        var ix = new long[tokens * m];
        Download(index, 0, ix, ix.Length);
        if (dRows is not null) Fill(dRows, 0, rowCount * d, 0);
        if (dW is not null) Fill(dW, 0, tokens * m, 0);
        using var tmp = Allocate(rows.DType, d);
        using var one = Allocate(rows.DType, 1);
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < m; j++)
            {
                long r = ix[t * m + j];
                if (r < 0) continue;
                if (r >= rowCount) throw new IndexOutOfRangeException($"WeightedGatherSum: row {r} outside [0, {rowCount})");
                if (dRows is not null)
                {
                    Binary(BinaryOp.Mul, new Strided(dOut, t * d, [1]), new Strided(w, t * m + j, [0]), tmp, new Shape(d));
                    CopyStrided(new Strided(tmp, 0, [1]), new Shape(d), dRows, (int)r * d);
                }
                if (dW is not null)
                {
                    Binary(BinaryOp.Mul, new Strided(dOut, t * d, [1]), new Strided(rows, (int)r * d, [1]), tmp, new Shape(d));
                    Reduce(ReduceOp.Sum, tmp, 0, one, 1, d, 1);
                    CopyStrided(new Strided(one, 0, [1]), new Shape(1), dW, t * m + j);
                }
            }
    }

    /// <summary>One AdamW step over n parameters (decoupled weight decay); m, v updated in place.</summary>
    void AdamW(Storage param, Storage grad, Storage m, Storage v, int n,
        double lr, double beta1, double beta2, double eps, double weightDecay, double biasCorrection1, double biasCorrection2);

    /// <summary>
    /// One AdamW step over several parameters with shared hyperparameters, each element computed exactly as by the
    /// single-tensor <see cref="AdamW(Storage, Storage, Storage, Storage, int, double, double, double, double, double, double, double)"/>.
    /// The default calls it per slot, in order; GPU backends update many parameters per launch.
    /// </summary>
    void AdamW(IReadOnlyList<AdamWSlot> slots, double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        foreach (var s in slots)
            AdamW(s.Param, s.Grad, s.M, s.V, s.Length, lr, beta1, beta2, eps, weightDecay, s.BiasCorrection1, s.BiasCorrection2);
    }

    /// <summary>
    /// result[0] = the sum of the squares of every element of every tensor (a one-element buffer of the tensors'
    /// dtype; 0 for no elements): the squared global L2 norm of gradient clipping. The default squares and sums each
    /// tensor with <see cref="Binary"/> and <see cref="Reduce"/> and adds the sums in order; GPU backends sum several
    /// tensors per launch. The order of the additions is the backend's own, fixed from run to run.
    /// </summary>
    void SumOfSquares(IReadOnlyList<BufferSlice> tensors, Storage result)
    {
        Fill(result, 0, 1, 0);
        foreach (var t in tensors)
        {
            if (t.Length == 0) continue;
            var shape = new Shape(t.Length);
            using var squares = Allocate(t.Storage.DType, t.Length);
            using var sum = Allocate(t.Storage.DType, 1);
            Binary(BinaryOp.Mul, new Strided(t.Storage, 0, [1]), new Strided(t.Storage, 0, [1]), squares, shape);
            Reduce(ReduceOp.Sum, squares, 0, sum, 1, t.Length, 1);
            Binary(BinaryOp.Add, new Strided(result, 0, [1]), new Strided(sum, 0, [1]), result, new Shape(1));
        }
    }

    /// <summary>
    /// Gradient clipping's two scalars from the squared global norm s = sumSquares[0], each written to a one-element
    /// buffer of this device (so a GPU need not read anything back): norm[0] = √s and
    /// coefficient[0] = min(1, maxNorm / (norm + 1e-6)), in the buffers' precision, NaN when s is NaN. The default
    /// reads s (host backends: no wait) and fills both; GPU backends compute them in one launch.
    /// </summary>
    void ClipCoefficient(Storage sumSquares, double maxNorm, Storage norm, Storage coefficient)
    {
        double n, c;
        if (sumSquares.DType == DType.Float32)
        {
            var s = new float[1];
            Download(sumSquares, 0, s, 1);
            float nf = MathF.Sqrt(s[0]), cf = (float)maxNorm / (nf + 1e-6f);
            (n, c) = (nf, cf > 1f ? 1f : cf);
        }
        else
        {
            var s = new double[1];
            Download(sumSquares, 0, s, 1);
            n = Math.Sqrt(s[0]);
            c = maxNorm / (n + 1e-6);
            if (c > 1) c = 1;
        }
        Fill(norm, 0, 1, n);
        Fill(coefficient, 0, 1, c);
    }

    /// <summary>
    /// Every tensor multiplied in place by scale[0] (a one-element buffer on this device, so a GPU need not read it
    /// back): x[i] ← x[i]·scale[0], the same product as <see cref="Binary"/>'s Mul. The default runs one Binary Mul
    /// per tensor; GPU backends scale several tensors per launch.
    /// </summary>
    void ScaleInPlace(IReadOnlyList<BufferSlice> tensors, Storage scale)
    {
        foreach (var t in tensors)
        {
            if (t.Length == 0) continue;
            Binary(BinaryOp.Mul, new Strided(t.Storage, 0, [1]), new Strided(scale, 0, [0]), t.Storage, new Shape(t.Length));
        }
    }
}

/// <summary>
/// The grouped GEMMs as one <see cref="IBackend.Gemm"/> per group (the interface's default implementations, and
/// the fallback of backends that override them), with their argument checks.
/// </summary>
internal static class GroupedGemmLoops
{
    /// <summary>See <see cref="IBackend.GroupedGemm"/>.</summary>
    public static void Rows(IBackend backend, int[] groupSizes, int n, int k, double alpha, Storage a, Storage[] b, bool transB, double beta, Storage c)
    {
        Check(groupSizes, b.Length);
        int row = 0;
        for (int g = 0; g < groupSizes.Length; row += groupSizes[g], g++)
        {
            if (groupSizes[g] == 0) continue;
            backend.Gemm(false, transB, groupSizes[g], n, k, alpha, a, row * k, k, 0, b[g], 0, transB ? k : n, 0,
                beta, c, row * n, n, 0, 1);
        }
    }

    /// <summary>See <see cref="IBackend.GroupedGemmKGrouped"/>.</summary>
    public static void KGrouped(IBackend backend, int[] groupSizes, int m, int n, double alpha, Storage a, Storage b, double beta, Storage?[] c)
    {
        Check(groupSizes, c.Length);
        int row = 0;
        for (int g = 0; g < groupSizes.Length; row += groupSizes[g], g++)
        {
            if (c[g] is not { } cg) continue;
            // K = 0 for an empty group: Gemm then only scales C.
            backend.Gemm(true, false, m, n, groupSizes[g], alpha, a, row * m, m, 0, b, row * n, n, 0, beta, cg, 0, n, 0, 1);
        }
    }

    /// <summary>One matrix per group and no negative group size.</summary>
    public static void Check(int[] groupSizes, int matrices)
    {
        ArgumentNullException.ThrowIfNull(groupSizes);
        if (matrices != groupSizes.Length)
            throw new ArgumentException($"GroupedGemm: {matrices} per-group matrices for {groupSizes.Length} groups");
        foreach (int s in groupSizes)
            if (s < 0) throw new ArgumentException($"GroupedGemm: negative group size in [{string.Join(",", groupSizes)}]");
    }
}
