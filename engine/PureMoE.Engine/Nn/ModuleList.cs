using System.Collections;

namespace PureMoE.Nn;

/// <summary>
/// An ordered list of child modules registered as "0", "1", … (torch.nn.ModuleList), so parameter names read
/// "layers.3.self_attn.q_proj.weight".
/// </summary>
public sealed class ModuleList<T> : Module, IReadOnlyList<T> where T : Module
{
    private readonly List<T> _items = [];

    /// <summary>Creates a list holding <paramref name="modules"/> in order.</summary>
    public ModuleList(IEnumerable<T> modules)
    {
        foreach (var m in modules) Append(m);
    }

    /// <summary>Appends a module under the next index name.</summary>
    public void Append(T module)
    {
        RegisterModule(_items.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), module);
        _items.Add(module);
    }

    /// <summary>The module at <paramref name="index"/>.</summary>
    public T this[int index] => _items[index];

    /// <summary>Number of modules.</summary>
    public int Count => _items.Count;

    /// <inheritdoc />
    public IEnumerator<T> GetEnumerator() => _items.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
