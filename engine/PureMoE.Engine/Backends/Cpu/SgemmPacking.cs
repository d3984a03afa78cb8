using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PureMoE.Backends.Cpu;

public static partial class Sgemm
{
    /// <summary>
    /// Packs the mc×kc block of op(A) at <paramref name="src"/> (element (r, p) at src[r*rowStride + p*colStride])
    /// into Mr-row micro-panels: panel q holds rows q*Mr.. as kc consecutive columns of Mr floats, exactly the
    /// order the micro-kernel broadcasts them. Rows past mc are zero so edge tiles need no special kernel.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void PackA(float* src, nint rowStride, nint colStride, int mc, int kc, float* dst)
    {
        for (int ir = 0; ir < mc; ir += Mr)
        {
            int mr = Math.Min(Mr, mc - ir);
            float* d = dst + (nint)ir * kc;
            float* s = src + ir * rowStride;
            if (Avx.IsSupported && rowStride == 1 && mr == Mr)
            {
                PackAColumnsContiguous(s, colStride, kc, d);
                continue;
            }

            if (Avx.IsSupported && colStride == 1)
            {
                PackARowsTransposed(s, rowStride, mr, kc, d);
                continue;
            }

            // Portable path. One column of the panel per step: Mr reads (contiguous when A is transposed, else Mr
            // row streams advancing in lockstep) and one contiguous write, which beats scattering row by row.
            for (int p = 0; p < kc; p++)
            {
                float* sp = s + p * colStride;
                float* dp = d + p * Mr;
                for (int r = 0; r < mr; r++)
                {
                    dp[r] = sp[r * rowStride];
                }
            }

            for (int p = 0; p < kc && mr < Mr; p++)
            {
                new Span<float>(d + p * Mr + mr, Mr - mr).Clear();
            }
        }
    }

    /// <summary>
    /// A transposed, a full panel (Mr ≤ 8 rows): column p of the panel is already Mr consecutive floats of the
    /// source, so each column is one vector copy (the backward's weight gradients Xᵀ·dY take this path).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void PackAColumnsContiguous(float* s, nint colStride, int kc, float* d)
    {
        for (int p = 0; p < kc; p++)
        {
            StoreFirst(Mr, LoadFirst(Mr, s + p * colStride), d + p * Mr);
        }
    }

    /// <summary>
    /// A not transposed (rows contiguous), mr ≤ Mr ≤ 8 rows: 8 columns at a time, the mr row segments are transposed
    /// 8×8 in registers (<see cref="Transpose8"/>), so every load and store is a vector instead of 8·8 scalar moves.
    /// Rows from mr to Mr are written as zeros.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void PackARowsTransposed(float* s, nint rowStride, int mr, int kc, float* d)
    {
        int p = 0;
        for (; p + 8 <= kc; p += 8)
        {
            Transpose8(s + p, rowStride, mr, d + p * Mr, Mr, Mr);
        }

        for (; p < kc; p++)
        {
            float* dp = d + p * Mr;
            for (int r = 0; r < Mr; r++)
            {
                dp[r] = r < mr ? s[r * rowStride + p] : 0f;
            }
        }
    }

    /// <summary>
    /// Loads <paramref name="rows"/> (≤ 8) runs of 8 floats, run r at src + r·srcStride (runs past
    /// <paramref name="rows"/> read as zeros), transposes the 8×8 block in registers and stores the first
    /// <paramref name="width"/> (4, 6 or 8) lanes of transposed row i at dst + i·dstStride: the classic AVX
    /// transpose (interleave pairs, then quads, then swap 128-bit halves).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Transpose8(float* src, nint srcStride, int rows, float* dst, nint dstStride, int width)
    {
        var r0 = Vector256.Load(src);
        var r1 = rows > 1 ? Vector256.Load(src + srcStride) : Vector256<float>.Zero;
        var r2 = rows > 2 ? Vector256.Load(src + 2 * srcStride) : Vector256<float>.Zero;
        var r3 = rows > 3 ? Vector256.Load(src + 3 * srcStride) : Vector256<float>.Zero;
        var r4 = rows > 4 ? Vector256.Load(src + 4 * srcStride) : Vector256<float>.Zero;
        var r5 = rows > 5 ? Vector256.Load(src + 5 * srcStride) : Vector256<float>.Zero;
        var r6 = rows > 6 ? Vector256.Load(src + 6 * srcStride) : Vector256<float>.Zero;
        var r7 = rows > 7 ? Vector256.Load(src + 7 * srcStride) : Vector256<float>.Zero;

        var t0 = Avx.UnpackLow(r0, r1);
        var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3);
        var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5);
        var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7);
        var t7 = Avx.UnpackHigh(r6, r7);
        var u0 = Avx.Shuffle(t0, t2, 0x44);
        var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44);
        var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44);
        var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44);
        var u7 = Avx.Shuffle(t5, t7, 0xEE);
        StoreFirst(width, Avx.Permute2x128(u0, u4, 0x20), dst);
        StoreFirst(width, Avx.Permute2x128(u1, u5, 0x20), dst + dstStride);
        StoreFirst(width, Avx.Permute2x128(u2, u6, 0x20), dst + 2 * dstStride);
        StoreFirst(width, Avx.Permute2x128(u3, u7, 0x20), dst + 3 * dstStride);
        StoreFirst(width, Avx.Permute2x128(u0, u4, 0x31), dst + 4 * dstStride);
        StoreFirst(width, Avx.Permute2x128(u1, u5, 0x31), dst + 5 * dstStride);
        StoreFirst(width, Avx.Permute2x128(u2, u6, 0x31), dst + 6 * dstStride);
        StoreFirst(width, Avx.Permute2x128(u3, u7, 0x31), dst + 7 * dstStride);
    }

    /// <summary>The first <paramref name="count"/> (4, 6 or 8: the tile heights Mr) floats at <paramref name="p"/>, as a vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<float> LoadFirst(int count, float* p) => count switch
    {
        8 => Vector256.Load(p),
        6 => Vector256.Create(Vector128.Load(p), Vector128.Create(p[4], p[5], 0f, 0f)),
        _ => Vector256.Create(Vector128.Load(p), Vector128<float>.Zero),
    };

    /// <summary>Stores the first <paramref name="count"/> (4, 6 or 8) lanes of <paramref name="v"/> at <paramref name="p"/>, nothing past them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void StoreFirst(int count, Vector256<float> v, float* p)
    {
        if (count == 8)
        {
            v.Store(p);
            return;
        }

        v.GetLower().Store(p);
        if (count == 6)
        {
            Vector128<float> upper = v.GetUpper();
            p[4] = upper.GetElement(0);
            p[5] = upper.GetElement(1);
        }
    }

    /// <summary>
    /// Packs the kc×nc panel of op(B) at <paramref name="src"/> (element (p, j) at src[p*rowStride + j*colStride])
    /// into Nr-column micro-panels: panel q holds kc consecutive rows of Nr floats (columns q*Nr..), the vectors
    /// the micro-kernel loads. Columns past nc are zero.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void PackB(float* src, nint rowStride, nint colStride, int kc, int nc, float* dst)
    {
        for (int jr = 0; jr < nc; jr += Nr)
        {
            int nr = Math.Min(Nr, nc - jr);
            float* d = dst + (nint)jr * kc;
            float* s = src + jr * colStride;
            if (colStride == 1)
            {
                // B not transposed: each panel row is a contiguous run of the source row. A full panel row is
                // Nr/8 vector moves (a Memmove call per 32-float row cost more than the copy itself).
                if (Avx.IsSupported && nr == Nr)
                {
                    for (int p = 0; p < kc; p++)
                    {
                        float* sp = s + p * rowStride, dp = d + p * Nr;
                        for (int j = 0; j < Nr; j += 8)
                        {
                            Vector256.Store(Vector256.Load(sp + j), dp + j);
                        }
                    }
                }
                else
                {
                    for (int p = 0; p < kc; p++)
                    {
                        new ReadOnlySpan<float>(s + p * rowStride, nr).CopyTo(new Span<float>(d + p * Nr, nr));
                    }
                }
            }
            else
            {
                // B transposed: a column of op(B) is a contiguous source row. Blocks of 8 columns × 8 rows go
                // through a register transpose; the leftover columns and rows are scattered with stride Nr.
                int jv = 0;
                if (Avx.IsSupported && rowStride == 1)
                {
                    for (; jv + 8 <= nr; jv += 8)
                    {
                        for (int p = 0; p + 8 <= kc; p += 8)
                        {
                            Transpose8(s + jv * colStride + p, colStride, 8, d + p * Nr + jv, Nr, 8);
                        }
                    }
                }

                int pv = Avx.IsSupported && rowStride == 1 ? kc / 8 * 8 : 0;
                for (int j = 0; j < nr; j++)
                {
                    float* sj = s + j * colStride;
                    float* dj = d + j;
                    for (int p = j < jv ? pv : 0; p < kc; p++)
                    {
                        dj[p * Nr] = sj[p * rowStride];
                    }
                }
            }

            for (int p = 0; p < kc && nr < Nr; p++)
            {
                new Span<float>(d + p * Nr + nr, Nr - nr).Clear();
            }
        }
    }
}
