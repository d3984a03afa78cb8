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

        /// <summary>Vector512 (AVX-512F): 6×32 tile.</summary>
        Vector512,
    }

    internal static readonly KernelKind Kind =
        Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? KernelKind.Vector512
        : Vector256.IsHardwareAccelerated && Fma.IsSupported ? KernelKind.Vector256
        : KernelKind.Scalar;

    // Tile shape MR×NR. The tile is MR rows (broadcast from packed A) by two vectors of B. 6×2 vectors =
    // 12 accumulators + 2 B vectors + 1 broadcast = 15 registers: fits even the 16 ymm registers of AVX2, and
    // 12 independent FMA chains cover FMA latency × throughput (4 cycles × 2 pipes) with room to spare.
    internal static readonly int Mr512 = 8;
    internal static readonly int Mr = Kind == KernelKind.Scalar ? 4 : Kind == KernelKind.Vector512 ? Mr512 : 6;
    internal static readonly int Nr = Kind switch
    {
        KernelKind.Vector512 => 32,
        KernelKind.Vector256 => 16,
        _ => 8,
    };

    // Cache blocking (see RESULTS.md for the sweep). KC: depth of one packed slice; the Nr×KC micro-panel of B
    // (32 KiB at 32×256) is streamed per tile, the MR×KC micro-panel of A (6 KiB) stays in L1.
    // MC×KC block of A (≈ 150 KiB) lives in L2 (1 MiB/core); KC×NC panel of B (≈ 4 MiB) in the shared L3.
    internal static int Kc = 512;
    internal static int Mc = 128;
    internal static int Nc = 4096;

    /// <summary>C[0..Mr, 0..Nr] = alpha * (packed A panel × packed B panel) + beta * C; beta = 0 never reads C.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void MicroKernel(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
    {
        if (Kind == KernelKind.Vector512)
        {
            switch (Mr512)
            {
                case 6: Kernel6x32(kc, a, b, c, ldc, alpha, beta); break;
                case 8: Kernel8x32(kc, a, b, c, ldc, alpha, beta); break;
                case 12: Kernel12x32(kc, a, b, c, ldc, alpha, beta); break;
                default: Kernel14x32(kc, a, b, c, ldc, alpha, beta); break;
            }
        }
        else if (Kind == KernelKind.Vector256)
        {
            Kernel6x16(kc, a, b, c, ldc, alpha, beta);
        }
        else
        {
            KernelScalar(kc, a, b, c, ldc, alpha, beta);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Kernel6x32(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(b);
            Vector512<float> b1 = Vector512.Load(b + 16);
            Vector512<float> ai = Vector512.Create(a[0]);
            c00 = Vector512.FusedMultiplyAdd(ai, b0, c00);
            c01 = Vector512.FusedMultiplyAdd(ai, b1, c01);
            ai = Vector512.Create(a[1]);
            c10 = Vector512.FusedMultiplyAdd(ai, b0, c10);
            c11 = Vector512.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector512.Create(a[2]);
            c20 = Vector512.FusedMultiplyAdd(ai, b0, c20);
            c21 = Vector512.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector512.Create(a[3]);
            c30 = Vector512.FusedMultiplyAdd(ai, b0, c30);
            c31 = Vector512.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector512.Create(a[4]);
            c40 = Vector512.FusedMultiplyAdd(ai, b0, c40);
            c41 = Vector512.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector512.Create(a[5]);
            c50 = Vector512.FusedMultiplyAdd(ai, b0, c50);
            c51 = Vector512.FusedMultiplyAdd(ai, b1, c51);
            a += 6;
            b += 32;
        }

        StoreRow512(c, c00, c01, alpha, beta);
        StoreRow512(c + ldc, c10, c11, alpha, beta);
        StoreRow512(c + 2 * ldc, c20, c21, alpha, beta);
        StoreRow512(c + 3 * ldc, c30, c31, alpha, beta);
        StoreRow512(c + 4 * ldc, c40, c41, alpha, beta);
        StoreRow512(c + 5 * ldc, c50, c51, alpha, beta);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Kernel8x32(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
    {
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
            ai = Vector512.Create(a[1]);
            c10 = Vector512.FusedMultiplyAdd(ai, b0, c10);
            c11 = Vector512.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector512.Create(a[2]);
            c20 = Vector512.FusedMultiplyAdd(ai, b0, c20);
            c21 = Vector512.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector512.Create(a[3]);
            c30 = Vector512.FusedMultiplyAdd(ai, b0, c30);
            c31 = Vector512.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector512.Create(a[4]);
            c40 = Vector512.FusedMultiplyAdd(ai, b0, c40);
            c41 = Vector512.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector512.Create(a[5]);
            c50 = Vector512.FusedMultiplyAdd(ai, b0, c50);
            c51 = Vector512.FusedMultiplyAdd(ai, b1, c51);
            ai = Vector512.Create(a[6]);
            c60 = Vector512.FusedMultiplyAdd(ai, b0, c60);
            c61 = Vector512.FusedMultiplyAdd(ai, b1, c61);
            ai = Vector512.Create(a[7]);
            c70 = Vector512.FusedMultiplyAdd(ai, b0, c70);
            c71 = Vector512.FusedMultiplyAdd(ai, b1, c71);
            a += 8;
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Kernel12x32(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
    {
        Vector512<float> c00 = default, c01 = default;
        Vector512<float> c10 = default, c11 = default;
        Vector512<float> c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default;
        Vector512<float> c50 = default, c51 = default;
        Vector512<float> c60 = default, c61 = default;
        Vector512<float> c70 = default, c71 = default;
        Vector512<float> c80 = default, c81 = default;
        Vector512<float> c90 = default, c91 = default;
        Vector512<float> c100 = default, c101 = default;
        Vector512<float> c110 = default, c111 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(b);
            Vector512<float> b1 = Vector512.Load(b + 16);
            Vector512<float> ai;
            ai = Vector512.Create(a[0]);
            c00 = Vector512.FusedMultiplyAdd(ai, b0, c00);
            c01 = Vector512.FusedMultiplyAdd(ai, b1, c01);
            ai = Vector512.Create(a[1]);
            c10 = Vector512.FusedMultiplyAdd(ai, b0, c10);
            c11 = Vector512.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector512.Create(a[2]);
            c20 = Vector512.FusedMultiplyAdd(ai, b0, c20);
            c21 = Vector512.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector512.Create(a[3]);
            c30 = Vector512.FusedMultiplyAdd(ai, b0, c30);
            c31 = Vector512.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector512.Create(a[4]);
            c40 = Vector512.FusedMultiplyAdd(ai, b0, c40);
            c41 = Vector512.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector512.Create(a[5]);
            c50 = Vector512.FusedMultiplyAdd(ai, b0, c50);
            c51 = Vector512.FusedMultiplyAdd(ai, b1, c51);
            ai = Vector512.Create(a[6]);
            c60 = Vector512.FusedMultiplyAdd(ai, b0, c60);
            c61 = Vector512.FusedMultiplyAdd(ai, b1, c61);
            ai = Vector512.Create(a[7]);
            c70 = Vector512.FusedMultiplyAdd(ai, b0, c70);
            c71 = Vector512.FusedMultiplyAdd(ai, b1, c71);
            ai = Vector512.Create(a[8]);
            c80 = Vector512.FusedMultiplyAdd(ai, b0, c80);
            c81 = Vector512.FusedMultiplyAdd(ai, b1, c81);
            ai = Vector512.Create(a[9]);
            c90 = Vector512.FusedMultiplyAdd(ai, b0, c90);
            c91 = Vector512.FusedMultiplyAdd(ai, b1, c91);
            ai = Vector512.Create(a[10]);
            c100 = Vector512.FusedMultiplyAdd(ai, b0, c100);
            c101 = Vector512.FusedMultiplyAdd(ai, b1, c101);
            ai = Vector512.Create(a[11]);
            c110 = Vector512.FusedMultiplyAdd(ai, b0, c110);
            c111 = Vector512.FusedMultiplyAdd(ai, b1, c111);
            a += 12;
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
        StoreRow512(c + 8 * ldc, c80, c81, alpha, beta);
        StoreRow512(c + 9 * ldc, c90, c91, alpha, beta);
        StoreRow512(c + 10 * ldc, c100, c101, alpha, beta);
        StoreRow512(c + 11 * ldc, c110, c111, alpha, beta);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Kernel14x32(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
    {
        Vector512<float> c00 = default, c01 = default;
        Vector512<float> c10 = default, c11 = default;
        Vector512<float> c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default;
        Vector512<float> c50 = default, c51 = default;
        Vector512<float> c60 = default, c61 = default;
        Vector512<float> c70 = default, c71 = default;
        Vector512<float> c80 = default, c81 = default;
        Vector512<float> c90 = default, c91 = default;
        Vector512<float> c100 = default, c101 = default;
        Vector512<float> c110 = default, c111 = default;
        Vector512<float> c120 = default, c121 = default;
        Vector512<float> c130 = default, c131 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(b);
            Vector512<float> b1 = Vector512.Load(b + 16);
            Vector512<float> ai;
            ai = Vector512.Create(a[0]);
            c00 = Vector512.FusedMultiplyAdd(ai, b0, c00);
            c01 = Vector512.FusedMultiplyAdd(ai, b1, c01);
            ai = Vector512.Create(a[1]);
            c10 = Vector512.FusedMultiplyAdd(ai, b0, c10);
            c11 = Vector512.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector512.Create(a[2]);
            c20 = Vector512.FusedMultiplyAdd(ai, b0, c20);
            c21 = Vector512.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector512.Create(a[3]);
            c30 = Vector512.FusedMultiplyAdd(ai, b0, c30);
            c31 = Vector512.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector512.Create(a[4]);
            c40 = Vector512.FusedMultiplyAdd(ai, b0, c40);
            c41 = Vector512.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector512.Create(a[5]);
            c50 = Vector512.FusedMultiplyAdd(ai, b0, c50);
            c51 = Vector512.FusedMultiplyAdd(ai, b1, c51);
            ai = Vector512.Create(a[6]);
            c60 = Vector512.FusedMultiplyAdd(ai, b0, c60);
            c61 = Vector512.FusedMultiplyAdd(ai, b1, c61);
            ai = Vector512.Create(a[7]);
            c70 = Vector512.FusedMultiplyAdd(ai, b0, c70);
            c71 = Vector512.FusedMultiplyAdd(ai, b1, c71);
            ai = Vector512.Create(a[8]);
            c80 = Vector512.FusedMultiplyAdd(ai, b0, c80);
            c81 = Vector512.FusedMultiplyAdd(ai, b1, c81);
            ai = Vector512.Create(a[9]);
            c90 = Vector512.FusedMultiplyAdd(ai, b0, c90);
            c91 = Vector512.FusedMultiplyAdd(ai, b1, c91);
            ai = Vector512.Create(a[10]);
            c100 = Vector512.FusedMultiplyAdd(ai, b0, c100);
            c101 = Vector512.FusedMultiplyAdd(ai, b1, c101);
            ai = Vector512.Create(a[11]);
            c110 = Vector512.FusedMultiplyAdd(ai, b0, c110);
            c111 = Vector512.FusedMultiplyAdd(ai, b1, c111);
            ai = Vector512.Create(a[12]);
            c120 = Vector512.FusedMultiplyAdd(ai, b0, c120);
            c121 = Vector512.FusedMultiplyAdd(ai, b1, c121);
            ai = Vector512.Create(a[13]);
            c130 = Vector512.FusedMultiplyAdd(ai, b0, c130);
            c131 = Vector512.FusedMultiplyAdd(ai, b1, c131);
            a += 14;
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
        StoreRow512(c + 8 * ldc, c80, c81, alpha, beta);
        StoreRow512(c + 9 * ldc, c90, c91, alpha, beta);
        StoreRow512(c + 10 * ldc, c100, c101, alpha, beta);
        StoreRow512(c + 11 * ldc, c110, c111, alpha, beta);
        StoreRow512(c + 12 * ldc, c120, c121, alpha, beta);
        StoreRow512(c + 13 * ldc, c130, c131, alpha, beta);
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Kernel6x16(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector256<float> b0 = Vector256.Load(b);
            Vector256<float> b1 = Vector256.Load(b + 8);
            Vector256<float> ai = Vector256.Create(a[0]);
            c00 = Vector256.FusedMultiplyAdd(ai, b0, c00);
            c01 = Vector256.FusedMultiplyAdd(ai, b1, c01);
            ai = Vector256.Create(a[1]);
            c10 = Vector256.FusedMultiplyAdd(ai, b0, c10);
            c11 = Vector256.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector256.Create(a[2]);
            c20 = Vector256.FusedMultiplyAdd(ai, b0, c20);
            c21 = Vector256.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector256.Create(a[3]);
            c30 = Vector256.FusedMultiplyAdd(ai, b0, c30);
            c31 = Vector256.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector256.Create(a[4]);
            c40 = Vector256.FusedMultiplyAdd(ai, b0, c40);
            c41 = Vector256.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector256.Create(a[5]);
            c50 = Vector256.FusedMultiplyAdd(ai, b0, c50);
            c51 = Vector256.FusedMultiplyAdd(ai, b1, c51);
            a += 6;
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

    /// <summary>Portable fallback with the same packed layout; written for clarity, not speed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void KernelScalar(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
    {
        int mr = Mr, nr = Nr;
        float* acc = stackalloc float[mr * nr];
        new Span<float>(acc, mr * nr).Clear();
        for (int p = 0; p < kc; p++)
        {
            for (int i = 0; i < mr; i++)
            {
                float ai = a[i];
                for (int j = 0; j < nr; j++)
                {
                    acc[i * nr + j] += ai * b[j];
                }
            }

            a += mr;
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
