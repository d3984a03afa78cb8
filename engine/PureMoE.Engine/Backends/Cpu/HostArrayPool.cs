namespace PureMoE.Backends.Cpu;

/// <summary>
/// Host arrays handed back by a <see cref="DeviceScope"/> that reuses host memory, kept for the next scope to take
/// again. A training step allocates the same sizes step after step; reusing its arrays spares the garbage
/// collector's fresh pages (the kernel zeroes every page on first touch: ≈ 13 % of a single-threaded step of the
/// compare model, bench/RESULTS.md). Sizes that move a little from step to step — the expert blocks of a ReLU
/// router, whose experts per token change every step — must find last step's arrays too, so the pool files arrays
/// by size class (<see cref="SizeClasses"/>: 1, 1.25, 1.5, 1.75 × 2ᵏ elements) and a request takes the shortest free
/// array of its class that is long enough. A new array gets a little headroom (<see cref="Capacity"/>, at most
/// 1/16 of its octave), so fixed sizes waste little; where a class's free arrays were all too short, the sizes
/// there vary, and a new one spans the whole class. The pool holds at most what the last scope to end gave
/// back: <see cref="ReturnAll"/> first drops whatever the scope before it left unused, so sizes that stop recurring
/// do not pile up.
/// </summary>
internal sealed class HostArrayPool
{
    /// <summary>Arrays shorter than this are left to the garbage collector (cheap in generation 0, not worth tracking).</summary>
    public const int MinLength = 4096;

    /// <summary>The process's pool.</summary>
    public static HostArrayPool Shared { get; } = new();

    private readonly Dictionary<(Type, long), List<Array>> _free = new();
    private readonly Lock _lock = new();

    /// <summary>
    /// The length of a new array for a request of <paramref name="length"/> elements whose size class had no free
    /// array: rounded up to a sixteenth of its octave (at most 6.25 % more, and never past its class), or the length
    /// itself where that would pass the largest array .NET allows.
    /// </summary>
    public static int Capacity(int length) => Fit(SizeClasses.RoundUp(length, stepsPerOctave: 16), length);

    /// <summary>
    /// The shortest free array of <paramref name="elementType"/> in the size class of <paramref name="length"/> with
    /// at least <paramref name="length"/> elements (old contents), taken out of the pool. When there is none, null,
    /// and <paramref name="newCapacity"/> is the length a new array should have: <see cref="Capacity"/>, or the
    /// whole class when the class had free arrays but all too short (its sizes vary: a request a little longer than
    /// last step's, as a ReLU router's expert blocks make; an array spanning the class fits them all from now on).
    /// </summary>
    public Array? TryRent(Type elementType, int length, out int newCapacity)
    {
        long sizeClass = SizeClasses.RoundUp(length);
        lock (_lock)
        {
            newCapacity = Capacity(length);
            if (!_free.TryGetValue((elementType, sizeClass), out var list) || list.Count == 0) return null;
            int best = -1;
            for (int i = 0; i < list.Count; i++)
                if (list[i].Length >= length && (best < 0 || list[i].Length < list[best].Length)) best = i;
            if (best < 0)
            {
                newCapacity = Fit(sizeClass, length);
                return null;
            }
            var array = list[best];
            list[best] = list[^1];
            list.RemoveAt(list.Count - 1);
            return array;
        }
    }

    // A rounded length, or the length itself where the rounding would pass the largest array .NET allows.
    private static int Fit(long rounded, int length) => rounded <= Array.MaxLength ? (int)rounded : length;

    /// <summary>Drops the arrays nobody took since the last call, then keeps <paramref name="arrays"/> for reuse.</summary>
    public void ReturnAll(IEnumerable<Array> arrays)
    {
        lock (_lock)
        {
            _free.Clear();
            foreach (var a in arrays)
            {
                var key = (a.GetType().GetElementType()!, SizeClasses.RoundUp(a.Length));
                if (!_free.TryGetValue(key, out var list)) _free[key] = list = [];
                list.Add(a);
            }
        }
    }

    /// <summary>How many arrays the pool holds now (for tests).</summary>
    public int Count
    {
        get { lock (_lock) return _free.Values.Sum(l => l.Count); }
    }
}
