using System.Numerics;

namespace PureMoE.Backends.Cpu;

/// <summary>
/// Obviously-correct triple-loop GEMM, generic over the element type. It is the test oracle for
/// <see cref="Sgemm"/> (instantiated at <see cref="double"/>) and the float64 path of the CPU backend.
/// Semantics and argument conventions are identical to <see cref="Sgemm.Multiply"/>.
/// </summary>
public static class GemmReference
{
    /// <summary>
    /// C = alpha * op(A) * op(B) + beta * C, with op(X) = X or Xᵀ; all matrices row-major.
    /// A is stored m×k (k×m if <paramref name="transA"/>), B is stored k×n (n×k if <paramref name="transB"/>).
    /// When <paramref name="beta"/> is zero, C is overwritten and never read.
    /// </summary>
    /// <param name="transA">Use Aᵀ.</param>
    /// <param name="transB">Use Bᵀ.</param>
    /// <param name="m">Rows of op(A) and C.</param>
    /// <param name="n">Columns of op(B) and C.</param>
    /// <param name="k">Columns of op(A) = rows of op(B).</param>
    /// <param name="alpha">Scale of the product.</param>
    /// <param name="a">Storage of A.</param>
    /// <param name="aOffset">Element offset of A[0,0].</param>
    /// <param name="lda">Row stride of stored A.</param>
    /// <param name="b">Storage of B.</param>
    /// <param name="bOffset">Element offset of B[0,0].</param>
    /// <param name="ldb">Row stride of stored B.</param>
    /// <param name="beta">Scale of the existing C.</param>
    /// <param name="c">Storage of C.</param>
    /// <param name="cOffset">Element offset of C[0,0].</param>
    /// <param name="ldc">Row stride of C.</param>
    public static void Multiply<T>(bool transA, bool transB, int m, int n, int k, T alpha,
        T[] a, int aOffset, int lda, T[] b, int bOffset, int ldb, T beta, T[] c, int cOffset, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        ArgumentNullException.ThrowIfNull(c);
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);

        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                T sum = T.Zero;
                for (int p = 0; p < k; p++)
                {
                    T aip = transA ? a[aOffset + p * lda + i] : a[aOffset + i * lda + p];
                    T bpj = transB ? b[bOffset + j * ldb + p] : b[bOffset + p * ldb + j];
                    sum += aip * bpj;
                }

                ref T cij = ref c[cOffset + i * ldc + j];
                cij = T.IsZero(beta) ? alpha * sum : alpha * sum + beta * cij;
            }
        }
    }

    /// <summary>
    /// <paramref name="batch"/> independent products; product i uses A, B and C at their offsets plus
    /// i times the matching stride. See <see cref="Multiply{T}"/> for the other arguments.
    /// </summary>
    /// <param name="transA">Use Aᵀ.</param>
    /// <param name="transB">Use Bᵀ.</param>
    /// <param name="m">Rows of op(A) and C.</param>
    /// <param name="n">Columns of op(B) and C.</param>
    /// <param name="k">Columns of op(A) = rows of op(B).</param>
    /// <param name="alpha">Scale of the product.</param>
    /// <param name="a">Storage of A.</param>
    /// <param name="aOffset">Element offset of the first A.</param>
    /// <param name="lda">Row stride of stored A.</param>
    /// <param name="strideA">Element distance between consecutive A matrices.</param>
    /// <param name="b">Storage of B.</param>
    /// <param name="bOffset">Element offset of the first B.</param>
    /// <param name="ldb">Row stride of stored B.</param>
    /// <param name="strideB">Element distance between consecutive B matrices.</param>
    /// <param name="beta">Scale of the existing C.</param>
    /// <param name="c">Storage of C.</param>
    /// <param name="cOffset">Element offset of the first C.</param>
    /// <param name="ldc">Row stride of C.</param>
    /// <param name="strideC">Element distance between consecutive C matrices.</param>
    /// <param name="batch">Number of products.</param>
    public static void MultiplyBatched<T>(bool transA, bool transB, int m, int n, int k, T alpha,
        T[] a, int aOffset, int lda, int strideA, T[] b, int bOffset, int ldb, int strideB,
        T beta, T[] c, int cOffset, int ldc, int strideC, int batch)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        for (int i = 0; i < batch; i++)
        {
            Multiply(transA, transB, m, n, k, alpha,
                a, aOffset + i * strideA, lda, b, bOffset + i * strideB, ldb,
                beta, c, cOffset + i * strideC, ldc);
        }
    }
}
