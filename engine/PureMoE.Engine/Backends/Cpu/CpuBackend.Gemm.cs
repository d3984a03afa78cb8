namespace PureMoE.Backends.Cpu;

public partial class CpuBackend
{
    /// <summary>float32 runs the packed, register-tiled <see cref="Sgemm"/>; float64 the simple reference loop.</summary>
    public override void Gemm(bool transA, bool transB, int m, int n, int k, double alpha,
        Storage a, int aOffset, int lda, int strideA, Storage b, int bOffset, int ldb, int strideB,
        double beta, Storage c, int cOffset, int ldc, int strideC, int batch)
    {
        if (c.DType != DType.Float32)
        {
            GemmReference.MultiplyBatched(transA, transB, m, n, k, alpha, A<double>(a), aOffset, lda, strideA,
                A<double>(b), bOffset, ldb, strideB, beta, A<double>(c), cOffset, ldc, strideC, batch);
            return;
        }
        Sgemm.MultiplyBatched(transA, transB, m, n, k, (float)alpha, A<float>(a), aOffset, lda, strideA,
            A<float>(b), bOffset, ldb, strideB, (float)beta, A<float>(c), cOffset, ldc, strideC, batch);
    }
}
