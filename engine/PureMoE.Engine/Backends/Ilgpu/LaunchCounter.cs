using System.Linq.Expressions;

namespace PureMoE.Backends.Ilgpu;

/// <summary>
/// Counts calls of ILGPU kernel delegates. On a GPU every launch costs a few microseconds of host time whatever
/// the kernel does, so the launches a training step makes bound how fast a small step can go; tests and
/// benchmarks read the count. <see cref="Wrap{T}"/> returns a delegate of the kernel's own type that adds one to
/// the counter and then calls the kernel (built once per kernel, when it is compiled and cached).
/// </summary>
internal sealed class LaunchCounter
{
    private long _count;

    /// <summary>Calls so far.</summary>
    public long Count => Interlocked.Read(ref _count);

    /// <summary>Adds one (for work queued without a kernel delegate, e.g. a device-to-device copy).</summary>
    public void Add() => Interlocked.Increment(ref _count);

    /// <summary>The kernel delegate, counted: same type and parameters, one <see cref="Add"/> before each call.</summary>
    public T Wrap<T>(T kernel) where T : Delegate
    {
        var invoke = typeof(T).GetMethod("Invoke")!;
        var parameters = invoke.GetParameters().Select(p => Expression.Parameter(p.ParameterType, p.Name)).ToArray();
        var body = Expression.Block(
            Expression.Call(Expression.Constant(this), typeof(LaunchCounter).GetMethod(nameof(Add))!),
            Expression.Invoke(Expression.Constant(kernel), parameters));
        return Expression.Lambda<T>(body, parameters).Compile();
    }
}
