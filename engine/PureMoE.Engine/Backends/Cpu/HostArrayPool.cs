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
/// there vary, and a new one spans the whole class. Arrays come back when their scope ends (<see cref="ReturnAll"/>)
/// or earlier, one by one (<see cref="Return"/>: a gradient the backward pass has consumed, taken again by the same
/// pass). The pool holds about what the last scope used: an array that sees more than <see cref="MaxIdleScopes"/>
/// scope ends without being taken is dropped, so sizes that stop recurring do not pile up, and once enough has been
/// dropped the pool asks for a full collection (<see cref="CollectAfterDroppedBytes"/>).
/// </summary>
internal sealed class HostArrayPool
{
    /// <summary>Arrays shorter than this are left to the garbage collector (cheap in generation 0, not worth tracking).</summary>
    public const int MinLength = 4096;

    /// <summary>The process's pool.</summary>
    public static HostArrayPool Shared { get; } = new();

    /// <summary>
    /// How many scope ends a free array may see without being taken before the pool drops it: none, so the pool holds
    /// about what the last scope used. Keeping arrays through one idle scope end made fewer new arrays over 40
    /// ReLU-routed steps (2,052 against 2,840 MiB) but raised the peak with <see cref="CollectAfterDroppedBytes"/>
    /// (946–974 against 845 MiB, bench/RESULTS.md).
    /// </summary>
    public const int MaxIdleScopes = 0;

    /// <summary>
    /// When the arrays the pool has dropped since its last request for a collection reach this many bytes, it asks
    /// the garbage collector for a full, blocking collection. Dropped arrays are large-object-heap garbage, which
    /// only a full collection frees, and the runtime lets much of it pile up first: a ReLU router's expert blocks,
    /// whose sizes move every step, left 1.2 GB resident against 422 MiB of step arrays; with this, 845 MiB at the
    /// same speed (a full collection of a heap of large arrays of numbers has little to trace).
    /// </summary>
    public const long CollectAfterDroppedBytes = 64L << 20;

    // Free arrays by (element type, size class), each with the scope ends it has seen free (−1: returned during the
    // current scope), in the order they came back.
    private readonly Dictionary<(Type, long), List<(Array Array, int Idle)>> _free = new();
    private readonly Lock _lock = new();
    private long _droppedBytes;

    /// <summary>
    /// The length of a new array for a request of <paramref name="length"/> elements whose size class had no free
    /// array: rounded up to a sixteenth of its octave (at most 6.25 % more, and never past its class), or the length
    /// itself where that would pass the largest array .NET allows.
    /// </summary>
    public static int Capacity(int length) => Fit(SizeClasses.RoundUp(length, stepsPerOctave: 16), length);

    /// <summary>
    /// The shortest free array of <paramref name="elementType"/> in the size class of <paramref name="length"/> with
    /// at least <paramref name="length"/> elements (old contents; of equal ones, the last returned), taken out of the
    /// pool. When there is none, null, and <paramref name="newCapacity"/> is the length a new array should have:
    /// <see cref="Capacity"/>, or the whole class when the class had free arrays but all too short (its sizes vary: a
    /// request a little longer than last step's, as a ReLU router's expert blocks make; an array spanning the class
    /// fits them all from now on).
    /// </summary>
    public Array? TryRent(Type elementType, int length, out int newCapacity)
    {
        long sizeClass = SizeClasses.RoundUp(length);
        lock (_lock)
        {
            newCapacity = Capacity(length);
            if (!_free.TryGetValue((elementType, sizeClass), out var list) || list.Count == 0) return null;
            // Of equally short arrays the one returned last: a gradient the backward pass has just recycled is
            // still in cache, and one array goes round instead of every free one in turn.
            int best = -1;
            for (int i = list.Count - 1; i >= 0; i--)
                if (list[i].Array.Length >= length && (best < 0 || list[i].Array.Length < list[best].Array.Length)) best = i;
            if (best < 0)
            {
                newCapacity = Fit(sizeClass, length);
                return null;
            }
            var array = list[best].Array;
            list.RemoveAt(best);
            return array;
        }
    }

    // A rounded length, or the length itself where the rounding would pass the largest array .NET allows.
    private static int Fit(long rounded, int length) => rounded <= Array.MaxLength ? (int)rounded : length;

    /// <summary>
    /// A scope has ended: every free array has seen one more scope end without being taken, and those that have
    /// seen more than <see cref="MaxIdleScopes"/> are dropped; then <paramref name="arrays"/> (the scope's) are kept
    /// for reuse.
    /// </summary>
    public void ReturnAll(IEnumerable<Array> arrays)
    {
        bool collect;
        lock (_lock)
        {
            foreach (var list in _free.Values)
            {
                for (int i = 0; i < list.Count; i++)
                {
                    list[i] = (list[i].Array, list[i].Idle + 1);
                    if (list[i].Idle > MaxIdleScopes) _droppedBytes += SizeOf(list[i].Array);
                }
                list.RemoveAll(e => e.Idle > MaxIdleScopes);
            }
            foreach (var a in arrays) Add(a, idle: 0);
            collect = _droppedBytes >= CollectAfterDroppedBytes;
            if (collect)
            {
                _droppedBytes = 0;
                Collections++;
            }
        }
        if (collect) GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true);
    }

    /// <summary>How many collections the pool has asked for (see <see cref="CollectAfterDroppedBytes"/>).</summary>
    public int Collections { get; private set; }

    /// <summary>Keeps one array for reuse now, before its scope ends (it is free from this moment).</summary>
    public void Return(Array array)
    {
        lock (_lock) Add(array, idle: -1);
    }

    private void Add(Array array, int idle)
    {
        var key = (array.GetType().GetElementType()!, SizeClasses.RoundUp(array.Length));
        if (!_free.TryGetValue(key, out var list)) _free[key] = list = [];
        list.Add((array, idle));
    }

    /// <summary>How many arrays the pool holds now (for tests).</summary>
    public int Count
    {
        get { lock (_lock) return _free.Values.Sum(l => l.Count); }
    }

    /// <summary>
    /// The bytes of the arrays the last scope to end used (those it gave back, at its end or earlier): after a
    /// training step, the host memory its tensors took (parameters and optimizer state aside).
    /// </summary>
    public long LastScopeBytes
    {
        get { lock (_lock) return _free.Values.Sum(l => l.Where(e => e.Idle == 0).Sum(e => SizeOf(e.Array))); }
    }

    private static long SizeOf(Array array) => (long)array.Length * (array is float[] ? 4 : 8);
}
