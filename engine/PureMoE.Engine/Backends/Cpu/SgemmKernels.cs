using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PureMoE.Backends.Cpu;

public static partial class Sgemm
{
    /// <summary>Which micro-kernel this machine runs; fixed at startup so the JIT folds the dispatch away.</summary>
    internal enum KernelKind
    {
        /// <summary>Portable scalar code (no usable SIMD).</summary>
        Scalar,

        /// <summary>Vector256 with FMA: 6×16 tile.</summary>
        Vector256,

        /// <summary>Vector512 (AVX-512F): 8×32 tile.</summary>
        Vector512,
    }

    internal static readonly KernelKind Kind =
        Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? KernelKind.Vector512
        : Vector256.IsHardwareAccelerated && Fma.IsSupported ? KernelKind.Vector256
        : KernelKind.Scalar;

    // Tile shape MR×NR: MR rows broadcast from packed A times two vectors of packed B, all kept in registers.
    // AVX-512: 8×32 = 16 zmm accumulators + 2 B vectors + 1 broadcast of the 32 zmm registers. 16 independent
    // FMA chains cover FMA latency × throughput; 6×32, 12×32 and 14×32 measured the same within noise
    // (bench/RESULTS.md), and MR = 8 divides the power-of-two sizes common in models, so no ragged row tiles.
    // AVX2: 6×16 = 12 ymm accumulators + 2 + 1 = 15 of the 16 ymm registers.
    internal static readonly int Mr = Kind switch
    {
        KernelKind.Vector512 => 8,
        KernelKind.Vector256 => 6,
        _ => 4,
    };

    internal static readonly int Nr = Kind switch
    {
        KernelKind.Vector512 => 32,
        KernelKind.Vector256 => 16,
        _ => 8,
    };

    // Cache blocking, measured on Zen 4 (32 KiB L1d, 1 MiB L2 per core, 32 MiB shared L3); see bench/RESULTS.md.
    // KC: depth of one packed slice. Larger KC means fewer passes of C through the caches (C is re-read and
    //     re-written once per slice); 512 beat 128/256 by 3-8 % and matched 768. The 8×512 A micro-panel
    //     (16 KiB) stays in L1 while the kernel streams the 32×512 B micro-panel (64 KiB) from L2.
    // MC: the MC×KC block of A (about 128×512 floats = 256 KiB) stays resident in L2 across the jr loop. A whole
    //     number of MR-row tiles (126 for AVX2's MR = 6), so that no block ends in a ragged tile computed through
    //     scratch: on Zen 3 (AVX2), 1024³ single-threaded 81.7 → 83.2 GFLOP/s, 2048³ 79.6 → 81.4 (bench/RESULTS.md).
    // NC: the KC×NC panel of B (up to 8 MiB) lives in the shared L3; large so B is packed few times.
    internal static int Kc = 512;
    internal static int Mc = Mr * (128 / Mr);
    internal static int Nc = 4096;

    /// <summary>
    /// C[0..Mr, 0..Nr] = alpha * (A panel × packed B panel) + beta * C; beta = 0 never reads C. Element (i, p) of
    /// the A panel is a[i·rowStep + p·colStep]: (1, Mr) for a packed panel, (1, lda) for a transposed A read in
    /// place (its Mr rows contiguous at each p), (lda, 1) for a row-major A read in place.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void MicroKernel(int kc, float* a, nint rowStep, nint colStep, float* b, float* c, nint ldc, float alpha, float beta)
    {
        if (Kind == KernelKind.Vector512)
        {
            Kernel8x32(kc, a, rowStep, colStep, b, c, ldc, alpha, beta);
        }
        else if (Kind == KernelKind.Vector256)
        {
            Kernel6x16(kc, a, rowStep, colStep, b, c, ldc, alpha, beta);
        }
        else
        {
            KernelScalar(kc, a, rowStep, colStep, b, c, ldc, alpha, beta);
        }
    }

    /// <summary>
    /// The AVX-512 tile (A panel strides as in <see cref="MicroKernel"/>). The row offsets are computed once, so each
    /// broadcast is one load, as from a packed panel.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Kernel8x32(int kc, float* a, nint rowStep, nint colStep, float* b, float* c, nint ldc, float alpha, float beta)
    {
        nint r1 = rowStep, r2 = 2 * rowStep, r3 = 3 * rowStep, r4 = 4 * rowStep;
        nint r5 = 5 * rowStep, r6 = 6 * rowStep, r7 = 7 * rowStep;
        Vector512<float> c00 = default, c01 = default;
        Vector512<float> c10 = default, c11 = default;
        Vector512<float> c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default;
        Vector512<float> c50 = default, c51 = default;
        Vector512<float> c60 = default, c61 = default;
        Vector512<float> c70 = default, c71 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(b);
            Vector512<float> b1 = Vector512.Load(b + 16);
            Vector512<float> ai;
            ai = Vector512.Create(a[0]);
            c00 = Vector512.FusedMultiplyAdd(ai, b0, c00);
            c01 = Vector512.FusedMultiplyAdd(ai, b1, c01);
            ai = Vector512.Create(a[r1]);
            c10 = Vector512.FusedMultiplyAdd(ai, b0, c10);
            c11 = Vector512.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector512.Create(a[r2]);
            c20 = Vector512.FusedMultiplyAdd(ai, b0, c20);
            c21 = Vector512.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector512.Create(a[r3]);
            c30 = Vector512.FusedMultiplyAdd(ai, b0, c30);
            c31 = Vector512.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector512.Create(a[r4]);
            c40 = Vector512.FusedMultiplyAdd(ai, b0, c40);
            c41 = Vector512.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector512.Create(a[r5]);
            c50 = Vector512.FusedMultiplyAdd(ai, b0, c50);
            c51 = Vector512.FusedMultiplyAdd(ai, b1, c51);
            ai = Vector512.Create(a[r6]);
            c60 = Vector512.FusedMultiplyAdd(ai, b0, c60);
            c61 = Vector512.FusedMultiplyAdd(ai, b1, c61);
            ai = Vector512.Create(a[r7]);
            c70 = Vector512.FusedMultiplyAdd(ai, b0, c70);
            c71 = Vector512.FusedMultiplyAdd(ai, b1, c71);
            a += colStep;
            b += 32;
        }

        StoreRow512(c, c00, c01, alpha, beta);
        StoreRow512(c + ldc, c10, c11, alpha, beta);
        StoreRow512(c + 2 * ldc, c20, c21, alpha, beta);
        StoreRow512(c + 3 * ldc, c30, c31, alpha, beta);
        StoreRow512(c + 4 * ldc, c40, c41, alpha, beta);
        StoreRow512(c + 5 * ldc, c50, c51, alpha, beta);
        StoreRow512(c + 6 * ldc, c60, c61, alpha, beta);
        StoreRow512(c + 7 * ldc, c70, c71, alpha, beta);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void StoreRow512(float* c, Vector512<float> lo, Vector512<float> hi, float alpha, float beta)
    {
        Vector512<float> va = Vector512.Create(alpha);
        lo *= va;
        hi *= va;
        if (beta != 0f)
        {
            Vector512<float> vb = Vector512.Create(beta);
            lo = Vector512.FusedMultiplyAdd(vb, Vector512.Load(c), lo);
            hi = Vector512.FusedMultiplyAdd(vb, Vector512.Load(c + 16), hi);
        }

        lo.Store(c);
        hi.Store(c + 16);
    }

    /// <summary>The AVX2 tile (A panel strides as in <see cref="MicroKernel"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Kernel6x16(int kc, float* a, nint rowStep, nint colStep, float* b, float* c, nint ldc, float alpha, float beta)
    {
        nint r1 = rowStep, r2 = 2 * rowStep, r3 = 3 * rowStep, r4 = 4 * rowStep, r5 = 5 * rowStep;
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector256<float> b0 = Vector256.Load(b);
            Vector256<float> b1 = Vector256.Load(b + 8);
            Vector256<float> ai = Vector256.Create(a[0]);
            c00 = Vector256.FusedMultiplyAdd(ai, b0, c00);
            c01 = Vector256.FusedMultiplyAdd(ai, b1, c01);
            ai = Vector256.Create(a[r1]);
            c10 = Vector256.FusedMultiplyAdd(ai, b0, c10);
            c11 = Vector256.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector256.Create(a[r2]);
            c20 = Vector256.FusedMultiplyAdd(ai, b0, c20);
            c21 = Vector256.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector256.Create(a[r3]);
            c30 = Vector256.FusedMultiplyAdd(ai, b0, c30);
            c31 = Vector256.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector256.Create(a[r4]);
            c40 = Vector256.FusedMultiplyAdd(ai, b0, c40);
            c41 = Vector256.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector256.Create(a[r5]);
            c50 = Vector256.FusedMultiplyAdd(ai, b0, c50);
            c51 = Vector256.FusedMultiplyAdd(ai, b1, c51);
            a += colStep;
            b += 16;
        }

        StoreRow256(c, c00, c01, alpha, beta);
        StoreRow256(c + ldc, c10, c11, alpha, beta);
        StoreRow256(c + 2 * ldc, c20, c21, alpha, beta);
        StoreRow256(c + 3 * ldc, c30, c31, alpha, beta);
        StoreRow256(c + 4 * ldc, c40, c41, alpha, beta);
        StoreRow256(c + 5 * ldc, c50, c51, alpha, beta);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void StoreRow256(float* c, Vector256<float> lo, Vector256<float> hi, float alpha, float beta)
    {
        Vector256<float> va = Vector256.Create(alpha);
        lo *= va;
        hi *= va;
        if (beta != 0f)
        {
            Vector256<float> vb = Vector256.Create(beta);
            lo = Vector256.FusedMultiplyAdd(vb, Vector256.Load(c), lo);
            hi = Vector256.FusedMultiplyAdd(vb, Vector256.Load(c + 8), hi);
        }

        lo.Store(c);
        hi.Store(c + 8);
    }

    /// <summary>Portable fallback (A panel strides as in <see cref="MicroKernel"/>); written for clarity, not speed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void KernelScalar(int kc, float* a, nint rowStep, nint colStep, float* b, float* c, nint ldc, float alpha, float beta)
    {
        int mr = Mr, nr = Nr;
        float* acc = stackalloc float[mr * nr];
        new Span<float>(acc, mr * nr).Clear();
        for (int p = 0; p < kc; p++)
        {
            for (int i = 0; i < mr; i++)
            {
                float ai = a[i * rowStep];
                for (int j = 0; j < nr; j++)
                {
                    acc[i * nr + j] += ai * b[j];
                }
            }

            a += colStep;
            b += nr;
        }

        for (int i = 0; i < mr; i++)
        {
            for (int j = 0; j < nr; j++)
            {
                float v = alpha * acc[i * nr + j];
                c[i * ldc + j] = beta == 0f ? v : MathF.FusedMultiplyAdd(beta, c[i * ldc + j], v);
            }
        }
    }
}
