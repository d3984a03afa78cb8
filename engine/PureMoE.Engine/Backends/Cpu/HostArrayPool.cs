using System.Collections.Concurrent;

namespace PureMoE.Backends.Cpu;

/// <summary>
/// Host arrays handed back by a <see cref="DeviceScope"/> that reuses host memory, kept for the next scope to take
/// again. A training step allocates the same sizes step after step; reusing its arrays spares the garbage
/// collector's fresh pages (the kernel zeroes every page on first touch: ≈ 13 % of a single-threaded step of the
/// compare model, bench/RESULTS.md). Arrays are matched by exact element type and length. The pool holds at most
/// what the last scope to end gave back: <see cref="ReturnAll"/> first drops whatever the scope before it left
/// unused, so sizes that stop recurring (a routing-dependent expert block) do not pile up.
/// </summary>
internal sealed class HostArrayPool
{
    /// <summary>Arrays shorter than this are left to the garbage collector (cheap in generation 0, not worth tracking).</summary>
    public const int MinLength = 4096;

    /// <summary>The process's pool.</summary>
    public static HostArrayPool Shared { get; } = new();

    private readonly ConcurrentDictionary<(Type, int), ConcurrentStack<Array>> _free = new();

    /// <summary>An array of <paramref name="elementType"/> and exactly <paramref name="length"/> elements from the pool (old contents), or null.</summary>
    public Array? TryRent(Type elementType, int length) =>
        _free.TryGetValue((elementType, length), out var stack) && stack.TryPop(out var array) ? array : null;

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
