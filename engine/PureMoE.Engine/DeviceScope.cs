using PureMoE.Backends;
using PureMoE.Nn;

namespace PureMoE;

/// <summary>
/// Frees device memory deterministically: every tensor whose data is allocated on an ILGPU device (CUDA, OpenCL,
/// <see cref="Device.IlgpuCpu"/>) while the scope is current is owned by the scope, and <see cref="Dispose"/>
/// returns its buffer to the device's memory pool — intermediates, gradients, everything — except the tensors
/// handed to <see cref="Keep(Tensor)"/> (or allocated under <see cref="Suspend"/>). Like TorchSharp's dispose
/// scopes; without a scope, a dropped tensor's buffer goes back to the pool when the garbage collector finalizes
/// it. Host tensors (<see cref="Device.Cpu"/>) are ordinary managed arrays, tracked only by a scope begun with
/// <see cref="Begin(bool)"/>, which reuses them from one scope to the next.
/// </summary>
/// <remarks>
/// Scopes nest; <see cref="Keep(Tensor)"/> moves a tensor to the enclosing scope, if any. "Current" follows the
/// flow of execution, like an AsyncLocal: on the thread that began the scope and in the tasks started inside it
/// (Task.Run, async continuations), so buffers that per-device tasks allocate are freed with the caller's step.
/// Begin and dispose a scope in the same flow, in <c>using</c> order. A tensor used after its scope is disposed
/// throws <see cref="ObjectDisposedException"/>. Optimizer state (<see cref="Optim.AdamW"/>) is never owned by a
/// scope; create models and other long-lived tensors outside a scope, keep them, or create them
/// under <see cref="Suspend"/>.
/// <code>
/// using (var scope = DeviceScope.Begin())
/// {
///     var loss = model.Loss(batch);
///     loss.Backward();
///     optimizer.Step();
///     lossValue = loss.Item();
/// }   // every device buffer of this step, the gradients included, is back in the pool
/// </code>
/// </remarks>
public sealed class DeviceScope : IDisposable
{
    // AsyncLocal, not ThreadStatic: the current scope flows into the tasks a caller starts (the expert-parallel layer runs
    // one task per device), so device memory those tasks allocate belongs to the caller's step and is freed with it.
    private static readonly AsyncLocal<DeviceScope?> s_current = new();


    private readonly DeviceScope? _outer;
    private readonly HashSet<Storage> _owned = new(ReferenceEqualityComparer.Instance);
    private readonly Lock _lock = new();
    private bool _disposed;

    private DeviceScope(DeviceScope? outer, Backends.Cpu.HostArrayPool? hostPool)
    {
        _outer = outer;
        HostPool = outer?.HostPool ?? hostPool;
    }

    /// <summary>Starts a scope that owns the device memory allocated in this flow (this thread and the tasks it starts) until it is disposed.</summary>
    public static DeviceScope Begin() => Begin(reuseHostMemory: false);

    /// <summary>
    /// Starts a scope; with <paramref name="reuseHostMemory"/> it also owns the host arrays of 4096 elements or more
    /// allocated in it (CPU tensors, gradients, intermediates) and, when it ends, keeps them for the next such scope
    /// to reuse instead of leaving them to the garbage collector, whose fresh memory the OS must zero page by page.
    /// A training loop that begins one per step allocates almost nothing after its first step. The contract is the
    /// device one: a host tensor created in the scope must not be used after it (that throws
    /// <see cref="ObjectDisposedException"/>) unless handed to <see cref="Keep(Tensor)"/>. Scopes nested in a
    /// reusing scope reuse too. Inside one, the backward pass gives arrays back as soon as nothing reads them (consumed
    /// gradients, a node's temporaries, the buffers an op saved for its backward), so a graph recorded in the scope
    /// supports one backward pass, as PyTorch's does by default; a second one through such an op throws.
    /// </summary>
    public static DeviceScope Begin(bool reuseHostMemory) =>
        Begin(reuseHostMemory ? Backends.Cpu.HostArrayPool.Shared : null);

    /// <summary>
    /// Starts a scope that reuses host memory from <paramref name="hostPool"/> instead of the process's pool (null:
    /// none), so that tests that look at a pool's contents see only their own scopes.
    /// </summary>
    internal static DeviceScope Begin(Backends.Cpu.HostArrayPool? hostPool)
    {
        var scope = new DeviceScope(s_current.Value, hostPool);
        s_current.Value = scope;
        return scope;
    }

    /// <summary>Whether this scope owns and reuses host arrays (see <see cref="Begin(bool)"/>).</summary>
    public bool ReusesHostMemory => HostPool is not null;

    /// <summary>The pool this scope's host arrays come from and go back to (an enclosing scope's if it has one); null unless it reuses host memory.</summary>
    internal Backends.Cpu.HostArrayPool? HostPool { get; }

    /// <summary>
    /// The bytes of the host arrays that the last scope to end among those reusing host memory
    /// (<see cref="Begin(bool)"/>) used, all kept now for the next. Read right after a training step's scope has
    /// ended, it is what that step's tensors took: activations, gradients and temporaries (the parameters, their
    /// optimizer state and tensors kept out of the scope aside). The backward pass gives a consumed gradient's array,
    /// and a node's temporaries, back at once for later gradients of the same pass, so this counts the gradients in
    /// flight at one moment, not all of them.
    /// </summary>
    public static long LastScopeHostBytes => Backends.Cpu.HostArrayPool.Shared.LastScopeBytes;

    /// <summary>The innermost scope of this flow of execution, or null.</summary>
    public static DeviceScope? Current => s_current.Value;

    /// <summary>
    /// Until the returned handle is disposed, device memory allocated in this flow belongs to no scope (for
    /// long-lived tensors such as parameters and optimizer state created inside a scope).
    /// </summary>
    public static IDisposable Suspend()
    {
        var saved = s_current.Value;
        s_current.Value = null;
        return new Restore(saved);
    }

    /// <summary>How many device buffers the scope owns now.</summary>
    public int OwnedCount
    {
        get { lock (_lock) return _owned.Count; }
    }

    /// <summary>
    /// Takes <paramref name="tensor"/>'s buffer (and its gradient's) out of this scope, into the enclosing scope if
    /// there is one, so it survives <see cref="Dispose"/>. Returns the tensor.
    /// </summary>
    public Tensor Keep(Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        Release(tensor.Storage);
        if (tensor.Grad is Tensor g) Release(g.Storage);
        return tensor;
    }

    /// <summary>Keeps every parameter of <paramref name="module"/> and their gradients (see <see cref="Keep(Tensor)"/>).</summary>
    public TModule Keep<TModule>(TModule module) where TModule : Module
    {
        ArgumentNullException.ThrowIfNull(module);
        foreach (var p in module.Parameters()) Keep(p);
        return module;
    }

    /// <summary>Returns every buffer the scope still owns to its device's pool and ends the scope.</summary>
    public void Dispose()
    {
        Storage[] owned;
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            owned = [.. _owned];
            _owned.Clear();
        }
        if (ReferenceEquals(s_current.Value, this)) s_current.Value = _outer;
        var reusable = new List<Array>();
        foreach (var s in owned)
        {
            if (s is CpuStorage host)
            {
                if (host.TakeForPool() is Array array) reusable.Add(array);
            }
            else
            {
                s.Dispose();
            }
        }
        HostPool?.ReturnAll(reusable);
    }

    /// <summary>
    /// Hands <paramref name="storage"/>'s array to the host-array pool now instead of when the scope ends, for
    /// allocations later in the scope to take: false (and nothing done) unless this scope reuses host memory and
    /// owns the storage. The caller promises nothing reads the storage again; a tensor that does throws
    /// <see cref="ObjectDisposedException"/>.
    /// </summary>
    internal bool ReturnEarly(CpuStorage storage)
    {
        if (HostPool is not { } pool) return false;
        lock (_lock)
            if (_disposed || !_owned.Remove(storage)) return false;
        if (storage.TakeForPool() is Array array) pool.Return(array);
        return true;
    }

    /// <summary>Called by device storages when they are created: the current scope owns them.</summary>
    internal static void Track(Storage storage) => s_current.Value?.Add(storage);

    private void Add(Storage storage)
    {
        lock (_lock)
        {
            if (_disposed) return;
            _owned.Add(storage);
            if (_madeLog is not null && storage is CpuStorage host && Environment.CurrentManagedThreadId == _madeLogThread)
                _madeLog.Add(host);
        }
    }

    // While set, the host storages this scope comes to own on one thread are also listed here: the backward pass's
    // record of what one node's backward made (GradientRecycler). One thread only, so that a task running beside
    // the pass cannot have its tensors taken for the pass's temporaries.
    private List<CpuStorage>? _madeLog;
    private int _madeLogThread;

    /// <summary>
    /// Lists in <paramref name="log"/> the host storages this scope comes to own from now on, on the calling thread
    /// only; null stops.
    /// </summary>
    internal void LogMade(List<CpuStorage>? log)
    {
        lock (_lock)
        {
            _madeLog = log;
            _madeLogThread = Environment.CurrentManagedThreadId;
        }
    }

    /// <summary>
    /// A backward pass begins inside a node's backward (nested): what that node makes from here is no longer its
    /// temporaries alone (the nested pass's gradients, kept by the node), so its list is emptied and stopped.
    /// </summary>
    internal void AbandonMadeLog()
    {
        lock (_lock)
        {
            _madeLog?.Clear();
            _madeLog = null;
        }
    }

    private void Release(Storage storage)
    {
        bool removed;
        lock (_lock) removed = _owned.Remove(storage);
        if (removed && _outer is not null) _outer.Add(storage);
    }

    private sealed class Restore(DeviceScope? saved) : IDisposable
    {
        private bool _done;

        public void Dispose()
        {
            if (_done) return;
            _done = true;
            s_current.Value = saved;
        }
    }
}
