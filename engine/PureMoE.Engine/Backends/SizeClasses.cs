namespace PureMoE.Backends;

/// <summary>
/// The size classes both memory pools round requests to: powers of two split in four steps (1, 1.25, 1.5, 1.75 × 2ᵏ),
/// so a request gets at most 25 % more than it asked for, and requests that differ by a few percent from step to step
/// (a routing-dependent expert block) land in the same class and reuse one buffer.
/// </summary>
internal static class SizeClasses
{
    /// <summary>The smallest class size ≥ <paramref name="n"/> (n ≥ 1).</summary>
    public static long RoundUp(long n)
    {
        if (n <= 4) return n;
        long pow = 1L << (63 - (int)long.LeadingZeroCount(n - 1)); // largest power of two < n
        long step = pow / 4;
        return (n + step - 1) / step * step;
    }
}
