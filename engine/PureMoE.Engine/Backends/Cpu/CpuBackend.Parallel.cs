using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PureMoE.Backends.Cpu;

/// <summary>
/// Deterministic work splitting: a range is cut into at most <see cref="Workers"/> contiguous pieces whose
/// boundaries are multiples of a grain, and small work runs on the calling thread. Kernels only split work whose
/// per-element results do not depend on the cut (elementwise, per row, per column), never a summation.
/// </summary>
internal static class Par
{
    /// <summary>Below this many units of work (≈ elements touched) everything runs on the calling thread.</summary>
    public const long Threshold = 32 * 1024;

    /// <summary>Threads used for large work.</summary>
    public static readonly int Workers = Math.Max(1, Environment.ProcessorCount);

    /// <summary>Runs body(start, end) over [0, count), split when count·costPerItem is large.</summary>
    public static void For(int count, long costPerItem, Action<int, int> body, int grain = 1)
    {
        if (count <= 0) return;
        long work = count * Math.Max(1, costPerItem);
        int grains = (count + grain - 1) / grain;
        int pieces = (int)Math.Min(Workers, grains);
        if (work < Threshold || pieces <= 1)
        {
            body(0, count);
            return;
        }
        int perPiece = (grains + pieces - 1) / pieces;
        Parallel.For(0, pieces, p =>
        {
            int start = p * perPiece * grain, end = Math.Min(count, (p + 1) * perPiece * grain);
            if (start < end) body(start, end);
        });
    }
}

/// <summary>Fixed-order SIMD reductions (the order depends only on the length, never on alignment or threads).</summary>
internal static class Simd
{
    public static bool Enabled => Vector256.IsHardwareAccelerated;

    /// <summary>Σ x in a fixed order: four 8-lane accumulators, combined pairwise, then the scalar tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Sum(ReadOnlySpan<float> x)
    {
        ref float p = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        int n = x.Length, i = 0;
        var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
        for (; i <= n - 32; i += 32)
        {
            a0 += Vector256.LoadUnsafe(ref p, (nuint)i);
            a1 += Vector256.LoadUnsafe(ref p, (nuint)(i + 8));
            a2 += Vector256.LoadUnsafe(ref p, (nuint)(i + 16));
            a3 += Vector256.LoadUnsafe(ref p, (nuint)(i + 24));
        }
        for (; i <= n - 8; i += 8) a0 += Vector256.LoadUnsafe(ref p, (nuint)i);
        float s = Vector256.Sum((a0 + a1) + (a2 + a3));
        for (; i < n; i++) s += Unsafe.Add(ref p, i);
        return s;
    }

    /// <summary>Σ a·b in a fixed order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        ref float pa = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(a);
        ref float pb = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(b);
        int n = a.Length, i = 0;
        var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
        for (; i <= n - 32; i += 32)
        {
            a0 += Vector256.LoadUnsafe(ref pa, (nuint)i) * Vector256.LoadUnsafe(ref pb, (nuint)i);
            a1 += Vector256.LoadUnsafe(ref pa, (nuint)(i + 8)) * Vector256.LoadUnsafe(ref pb, (nuint)(i + 8));
            a2 += Vector256.LoadUnsafe(ref pa, (nuint)(i + 16)) * Vector256.LoadUnsafe(ref pb, (nuint)(i + 16));
            a3 += Vector256.LoadUnsafe(ref pa, (nuint)(i + 24)) * Vector256.LoadUnsafe(ref pb, (nuint)(i + 24));
        }
        for (; i <= n - 8; i += 8) a0 += Vector256.LoadUnsafe(ref pa, (nuint)i) * Vector256.LoadUnsafe(ref pb, (nuint)i);
        float s = Vector256.Sum((a0 + a1) + (a2 + a3));
        for (; i < n; i++) s += Unsafe.Add(ref pa, i) * Unsafe.Add(ref pb, i);
        return s;
    }

    /// <summary>Σ (a·b)·c in a fixed order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Dot3(ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> c)
    {
        int n = a.Length, i = 0;
        var a0 = Vector256<float>.Zero; var a1 = a0;
        for (; i <= n - 16; i += 16)
        {
            a0 += Vector256.Create(a[i..]) * Vector256.Create(b[i..]) * Vector256.Create(c[i..]);
            a1 += Vector256.Create(a[(i + 8)..]) * Vector256.Create(b[(i + 8)..]) * Vector256.Create(c[(i + 8)..]);
        }
        for (; i <= n - 8; i += 8) a0 += Vector256.Create(a[i..]) * Vector256.Create(b[i..]) * Vector256.Create(c[i..]);
        float s = Vector256.Sum(a0 + a1);
        for (; i < n; i++) s += a[i] * b[i] * c[i];
        return s;
    }

    /// <summary>max x, NaN-propagating (−∞ for an empty span), as the reference: v is taken when NaN or greater.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Max(ReadOnlySpan<float> x)
    {
        int n = x.Length, i = 0;
        float m = float.NegativeInfinity;
        if (n >= 8)
        {
            var acc = Vector256.Create(float.NegativeInfinity);
            for (; i <= n - 8; i += 8) acc = MaxStep(acc, Vector256.Create(x[i..]));
            for (int l = 0; l < 8; l++) m = MaxStep(m, acc[l]);
        }
        for (; i < n; i++) m = MaxStep(m, x[i]);
        return m;
    }

    /// <summary>The reference's max step: v when v is NaN or v &gt; acc.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxStep(float acc, float v) => float.IsNaN(v) || v > acc ? v : acc;

    /// <summary>The reference's max step, lane-wise.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> MaxStep(Vector256<float> acc, Vector256<float> v) =>
        Vector256.ConditionalSelect(~Vector256.Equals(v, v) | Vector256.GreaterThan(v, acc), v, acc);
}
