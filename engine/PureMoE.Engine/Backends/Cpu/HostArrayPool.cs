using System.Collections.Concurrent;

namespace PureMoE.Backends.Cpu;

/// <summary>
/// Host arrays handed back by a <see cref="DeviceScope"/> that reuses host memory, kept for the next scope to take
/// again. A training step allocates the same sizes step after step; reusing its arrays spares the garbage
/// collector's fresh pages (the kernel zeroes every page on first touch: ≈ 13 % of a single-threaded step of the
/// compare model, bench/RESULTS.md). A request is rounded up to its size class (<see cref="Capacity"/>, the classes
/// of the GPU pool), so sizes that move a little from step to step — the expert blocks of a ReLU router, whose
/// experts per token change every step — still find last step's array instead of leaving it as garbage and taking
/// fresh pages. The pool holds at most what the last scope to end gave back: <see cref="ReturnAll"/> first drops
/// whatever the scope before it left unused, so classes that stop recurring do not pile up.
/// </summary>
internal sealed class HostArrayPool
{
    /// <summary>Arrays shorter than this are left to the garbage collector (cheap in generation 0, not worth tracking).</summary>
    public const int MinLength = 4096;

    /// <summary>The process's pool.</summary>
    public static HostArrayPool Shared { get; } = new();

    private readonly ConcurrentDictionary<(Type, int), ConcurrentStack<Array>> _free = new();

    /// <summary>
    /// The length of the array the pool uses for a request of <paramref name="length"/> elements: its size class
    /// (at most 25 % more), or the length itself where the class would pass the largest array .NET allows.
    /// </summary>
    public static int Capacity(int length)
    {
        long rounded = SizeClasses.RoundUp(length);
        return rounded <= Array.MaxLength ? (int)rounded : length;
    }

    /// <summary>
    /// An array of <paramref name="elementType"/> and exactly <paramref name="capacity"/> elements (a
    /// <see cref="Capacity"/>) from the pool, with old contents, or null.
    /// </summary>
    public Array? TryRent(Type elementType, int capacity) =>
        _free.TryGetValue((elementType, capacity), out var stack) && stack.TryPop(out var array) ? array : null;

    /// <summary>Drops the arrays nobody took since the last call, then keeps <paramref name="arrays"/> for reuse.</summary>
    public void ReturnAll(IEnumerable<Array> arrays)
    {
        _free.Clear();
        foreach (var a in arrays)
            _free.GetOrAdd((a.GetType().GetElementType()!, a.Length), _ => new ConcurrentStack<Array>()).Push(a);
    }

    /// <summary>How many arrays the pool holds now (for tests).</summary>
    public int Count => _free.Values.Sum(s => s.Count);
}
