using PureMoE.Backends;

namespace PureMoE.Autograd;

/// <summary>
/// Gives the host arrays of consumed gradients, and of each node's temporaries, back to the host-array pool during
/// the backward pass, so the gradients made later in the same pass take them again: a pass then holds about the
/// gradients in flight at one moment instead of every array it ever made. Without this, the scope of a training step
/// keeps every array until the step ends (bench/RESULTS.md: about a third of the compare model's step memory was
/// consumed gradients).
/// </summary>
/// <remarks>
/// Safe by construction, and otherwise idle:
/// <list type="bullet">
/// <item>Only while a <see cref="DeviceScope"/> that reuses host memory is current and owns the storage (outside
/// one, a dropped gradient is already garbage for the collector).</item>
/// <item>Only storages made after the pass began (<see cref="CpuStorage.Serial"/>): never the seed, a forward
/// activation, or a gradient an op computed in its forward and hands out in its backward.</item>
/// <item>A storage is counted once per pending gradient that views it (a reshape's gradient shares its consumer's
/// storage; Add hands one gradient to both inputs), and goes back only when none is left.</item>
/// <item>Never a storage a leaf keeps as its <see cref="Tensor.Grad"/>, nor the gradient given to a custom function
/// (<see cref="Tensor.Function"/>), whose backward may keep it.</item>
/// <item>A node's temporaries: the storages its backward made (on the pass's thread) that none of the gradients it
/// returned views; engine ops keep nothing from their backward. Not a custom function's (it may keep what it
/// made), nor those of a node whose backward runs a backward pass of its own.</item>
/// <item>The buffers an op saved for its backward alone (<see cref="Node.Saved"/>), once that backward has run;
/// the node is then spent, and a second backward pass through it throws.</item>
/// </list>
/// A recycled storage is emptied: a tensor that still read it would throw <see cref="ObjectDisposedException"/>, not
/// read another gradient's numbers.
/// </remarks>
internal sealed class GradientRecycler
{
    private readonly DeviceScope? _scope;
    private readonly long _madeAfter;
    private readonly Dictionary<CpuStorage, int> _pending = new(ReferenceEqualityComparer.Instance);
    private readonly HashSet<CpuStorage> _kept = new(ReferenceEqualityComparer.Instance);
    private readonly List<CpuStorage> _made = [];
    private bool _logging;

    /// <summary>Starts recycling for one backward pass (idle unless the current scope reuses host memory).</summary>
    public GradientRecycler()
    {
        _scope = DeviceScope.Current is { ReusesHostMemory: true } scope ? scope : null;
        _madeAfter = CpuStorage.PooledCreated;
        _scope?.AbandonMadeLog(); // a pass nested in a node's backward: that node's temporaries are not known now
    }

    /// <summary>Counts one more pending gradient viewing <paramref name="gradient"/>'s storage.</summary>
    public void Hold(Tensor gradient)
    {
        if (Candidate(gradient) is { } s) _pending[s] = _pending.GetValueOrDefault(s) + 1;
    }

    /// <summary>
    /// Counts one pending gradient fewer on <paramref name="gradient"/>'s storage (one that <see cref="Hold"/>
    /// counted); the last one gives the storage back, unless a leaf keeps it.
    /// </summary>
    public void Drop(Tensor gradient)
    {
        if (Candidate(gradient) is not { } s) return;
        int left = _pending[s] - 1;
        if (left > 0)
        {
            _pending[s] = left;
            return;
        }
        _pending.Remove(s);
        if (!_kept.Contains(s)) _scope!.ReturnEarly(s);
    }

    /// <summary>
    /// Before a node's backward runs: starts listing the host storages it makes (unless its backward may keep
    /// tensors, as a custom function's may). <see cref="EndBackward"/> gives back those that are temporaries.
    /// </summary>
    public void BeginBackward(Node node)
    {
        if (_scope is null || node.KeepsGradient) return;
        _made.Clear();
        _scope.LogMade(_made);
        _logging = true;
    }

    /// <summary>
    /// After a node's backward: the storages it made that none of its returned <paramref name="gradients"/> views
    /// were its temporaries (a Div backward's g·y and g·y / c on the way to −g·y / c²), read by nothing any more,
    /// and go back. Null <paramref name="gradients"/> (the backward threw) only stops the listing.
    /// </summary>
    public void EndBackward(Tensor?[]? gradients)
    {
        if (!_logging) return;
        _scope!.LogMade(null);
        _logging = false;
        if (gradients is null) return;
        foreach (var s in _made)
            if (!Views(gradients, s)) _scope.ReturnEarly(s);
        _made.Clear();
    }

    /// <summary>
    /// After a node's backward: the buffers its op saved for it alone (<see cref="Node.Saved"/>) go back, except
    /// any that one of its returned <paramref name="gradients"/> views; the node is then spent (a second backward
    /// through it throws instead of reading another tensor's numbers).
    /// </summary>
    public void ReleaseSaved(Node node, Tensor?[] gradients)
    {
        if (_scope is null || node.Saved is null || node.KeepsGradient) return;
        foreach (var saved in node.Saved)
            if (saved.Storage is CpuStorage s && !Views(gradients, s) && _scope.ReturnEarly(s)) node.Spent = true;
    }

    // Whether one of a node's returned gradients views the storage (it lives on as a pending gradient).
    private static bool Views(Tensor?[] gradients, CpuStorage storage)
    {
        foreach (var g in gradients)
            if (g is not null && ReferenceEquals(g.Storage, storage)) return true;
        return false;
    }

    /// <summary>Marks <paramref name="gradient"/>'s storage as never to recycle (a leaf adopted it, or a custom backward may keep it).</summary>
    public void Keep(Tensor gradient)
    {
        if (Candidate(gradient) is { } s) _kept.Add(s);
    }

    // A storage this pass may recycle: host, from the pool, made after the pass began, with a reusing scope current.
    private CpuStorage? Candidate(Tensor gradient) =>
        _scope is not null && gradient.Storage is CpuStorage { Serial: > 0 } s && s.Serial > _madeAfter ? s : null;
}
