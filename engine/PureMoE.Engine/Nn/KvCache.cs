namespace PureMoE.Nn;

/// <summary>
/// Keys and values of the positions already processed, per attention layer, so that generation feeds only the
/// new tokens: each layer appends its new k/v [B, Hkv, S_new, D] along the sequence axis and attends over all.
/// Use it under <see cref="Tensor.NoGrad"/>; it keeps whatever graph its tensors carry.
/// </summary>
public sealed class KvCache
{
    private readonly Tensor?[] _keys;
    private readonly Tensor?[] _values;

    /// <summary>An empty cache for <paramref name="numLayers"/> attention layers.</summary>
    public KvCache(int numLayers)
    {
        _keys = new Tensor?[numLayers];
        _values = new Tensor?[numLayers];
    }

    /// <summary>Number of layers.</summary>
    public int NumLayers => _keys.Length;

    /// <summary>Number of positions cached for <paramref name="layer"/> (the position offset of its next input).</summary>
    public int Length(int layer) => _keys[CheckLayer(layer)]?.Size(2) ?? 0;

    /// <summary>
    /// Appends new keys and values [B, Hkv, S_new, D] to <paramref name="layer"/> and returns all of them
    /// [B, Hkv, S_past + S_new, D].
    /// </summary>
    public (Tensor Keys, Tensor Values) Update(int layer, Tensor keys, Tensor values)
    {
        CheckLayer(layer);
        if (_keys[layer] is Tensor pastK && _values[layer] is Tensor pastV)
        {
            keys = Tensor.Concat([pastK, keys], 2);
            values = Tensor.Concat([pastV, values], 2);
        }
        _keys[layer] = keys;
        _values[layer] = values;
        return (keys, values);
    }

    /// <summary>Forgets everything (start a new sequence).</summary>
    public void Clear()
    {
        Array.Clear(_keys);
        Array.Clear(_values);
    }

    private int CheckLayer(int layer)
    {
        if (layer < 0 || layer >= _keys.Length)
            throw new ArgumentOutOfRangeException(nameof(layer), layer, $"KvCache: layer must be in [0, {_keys.Length})");
        return layer;
    }
}
