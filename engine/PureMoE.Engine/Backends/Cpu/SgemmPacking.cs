using System.Runtime.CompilerServices;

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
            // One column of the panel per step: Mr reads (contiguous when A is transposed, else Mr row
            // streams advancing in lockstep) and one contiguous write, which beats scattering row by row.
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
                // B not transposed: each panel row is a contiguous run of the source row.
                for (int p = 0; p < kc; p++)
                {
                    new ReadOnlySpan<float>(s + p * rowStride, nr).CopyTo(new Span<float>(d + p * Nr, nr));
                }
            }
            else
            {
                // B transposed: a column of op(B) is a contiguous source row; scatter it with stride Nr.
                for (int j = 0; j < nr; j++)
                {
                    float* sj = s + j * colStride;
                    float* dj = d + j;
                    for (int p = 0; p < kc; p++)
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
