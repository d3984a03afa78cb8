namespace PureMoE.Backends;

/// <summary>
/// The size classes the memory pools round requests to: powers of two split in equal steps, by default four
/// (1, 1.25, 1.5, 1.75 × 2ᵏ), so a class holds requests that differ by up to 25 % — a routing-dependent expert block,
/// a little larger or smaller every step, stays in its class and finds last step's buffer.
/// </summary>
internal static class SizeClasses
{
    /// <summary>
    /// The smallest class size ≥ <paramref name="n"/> (n ≥ 1) with <paramref name="stepsPerOctave"/> (a power of two)
    /// classes between one power of two and the next.
    /// </summary>
    public static long RoundUp(long n, int stepsPerOctave = 4)
    {
        if (n <= stepsPerOctave) return n;
        long pow = 1L << (63 - (int)long.LeadingZeroCount(n - 1)); // largest power of two < n
        long step = pow / stepsPerOctave;
        return (n + step - 1) / step * step;
    }
}
