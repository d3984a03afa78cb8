using System.Numerics;

namespace PureMoE;

/// <summary>
/// A small deterministic random generator (SplitMix64 seeding xoshiro256**). The same seed gives the same stream
/// on every machine and .NET version, which System.Random does not promise.
/// </summary>
public sealed class Rng
{
    private ulong _s0, _s1, _s2, _s3;
    private double? _spareGaussian;

    /// <summary>Creates a generator from a seed.</summary>
    public Rng(ulong seed)
    {
        ulong x = seed;
        _s0 = SplitMix(ref x); _s1 = SplitMix(ref x); _s2 = SplitMix(ref x); _s3 = SplitMix(ref x);
    }

    private static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>The next 64 random bits.</summary>
    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0; _s3 ^= _s1; _s1 ^= _s2; _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [0, n).</summary>
    public int NextInt(int n)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n), n, "Rng.NextInt: n must be positive");
        return (int)(NextDouble() * n);
    }

    /// <summary>Standard normal (Box–Muller, both values used).</summary>
    public double NextGaussian()
    {
        if (_spareGaussian is double spare) { _spareGaussian = null; return spare; }
        double u1, u2;
        do u1 = NextDouble(); while (u1 <= double.Epsilon);
        u2 = NextDouble();
        double r = Math.Sqrt(-2.0 * Math.Log(u1));
        _spareGaussian = r * Math.Sin(2 * Math.PI * u2);
        return r * Math.Cos(2 * Math.PI * u2);
    }

    /// <summary>
    /// Fills <paramref name="destination"/> with NextGaussian()·<paramref name="std"/>, converted to T: the same stream
    /// and the same bits as calling <see cref="NextGaussian"/> once per element, computed in bulk. The uniform draws
    /// go in order, a chunk at a time; the Box–Muller transforms (a log, a square root, a sine and a cosine per pair,
    /// most of the cost) depend only on their pair's draws, so they run in parallel.
    /// </summary>
    internal void FillGaussian<T>(T[] destination, double std) where T : struct, IFloatingPointIeee754<T>
    {
        int i = 0, n = destination.Length;
        if (n > 0 && _spareGaussian is double spare)
        {
            destination[i++] = T.CreateTruncating(spare * std);
            _spareGaussian = null;
        }
        const int ChunkPairs = 1 << 16, BlockPairs = 1 << 12;
        int chunk = Math.Min(ChunkPairs, (n - i + 1) / 2);
        double[] u1 = new double[chunk], u2 = new double[chunk];
        while (i < n)
        {
            int pairs = Math.Min(ChunkPairs, (n - i + 1) / 2), start = i;
            for (int p = 0; p < pairs; p++)
            {
                double a;
                do a = NextDouble(); while (a <= double.Epsilon);
                u1[p] = a;
                u2[p] = NextDouble();
            }
            // Pair p gives element start + 2p (the cosine) and start + 2p + 1 (the sine); past the end, the sine is
            // the spare that the next draw returns, as in NextGaussian.
            void Transform(int from, int to)
            {
                for (int p = from; p < to; p++)
                {
                    double r = Math.Sqrt(-2.0 * Math.Log(u1[p])), angle = 2 * Math.PI * u2[p];
                    int e = start + 2 * p;
                    destination[e] = T.CreateTruncating(r * Math.Cos(angle) * std);
                    if (e + 1 < n) destination[e + 1] = T.CreateTruncating(r * Math.Sin(angle) * std);
                    else _spareGaussian = r * Math.Sin(angle);
                }
            }
            if (pairs <= BlockPairs) Transform(0, pairs);
            else Parallel.For(0, (pairs + BlockPairs - 1) / BlockPairs, b => Transform(b * BlockPairs, Math.Min(pairs, (b + 1) * BlockPairs)));
            i = Math.Min(n, start + 2 * pairs);
        }
    }

    /// <summary>A new generator whose stream is independent of this one's continuation (for sub-components).</summary>
    public Rng Fork() => new(NextUInt64());
}
