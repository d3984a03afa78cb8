using System.Collections.Concurrent;
using System.Linq.Expressions;

namespace PureMoE.Backends.Ilgpu;

/// <summary>
/// Counts calls of ILGPU kernel delegates, in total and per kernel. On a GPU every launch costs a few microseconds
/// of host time whatever the kernel does, so the launches a training step makes bound how fast a small step can go;
/// tests and benchmarks read the count, and the per-kernel counts say where the launches come from.
/// <see cref="Wrap{T}"/> returns a delegate of the kernel's own type that adds one to the counters and then calls
/// the kernel (built once per kernel, when it is compiled and cached).
/// </summary>
internal sealed class LaunchCounter
{
    private long _count;
    private readonly ConcurrentDictionary<string, Counter> _byName = new(StringComparer.Ordinal);

    /// <summary>One kernel's (or one kind of queued work's) count.</summary>
    private sealed class Counter
    {
        public long Value;
    }

    /// <summary>Calls so far.</summary>
    public long Count => Interlocked.Read(ref _count);

    /// <summary>Calls so far per name (kernel, "copy", "fill"), as a snapshot.</summary>
    public IReadOnlyDictionary<string, long> ByName =>
        _byName.ToDictionary(kv => kv.Key, kv => Interlocked.Read(ref kv.Value.Value), StringComparer.Ordinal);

    /// <summary>Adds one under <paramref name="name"/> (for work queued without a kernel delegate, e.g. a device-to-device copy).</summary>
    public void Add(string name) => Increment(_byName.GetOrAdd(name, _ => new Counter()));

    private void Increment(Counter counter)
    {
        Interlocked.Increment(ref _count);
        Interlocked.Increment(ref counter.Value);
    }

    /// <summary>The kernel delegate, counted under <paramref name="name"/>: same type and parameters, counted before each call.</summary>
    public T Wrap<T>(T kernel, string name) where T : Delegate
    {
        var counter = _byName.GetOrAdd(name, _ => new Counter());
        var invoke = typeof(T).GetMethod("Invoke")!;
        var parameters = invoke.GetParameters().Select(p => Expression.Parameter(p.ParameterType, p.Name)).ToArray();
        var body = Expression.Block(
            Expression.Call(Expression.Constant(this), typeof(LaunchCounter).GetMethod(nameof(Increment), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!,
                Expression.Constant(counter)),
            Expression.Invoke(Expression.Constant(kernel), parameters));
        return Expression.Lambda<T>(body, parameters).Compile();
    }
}
