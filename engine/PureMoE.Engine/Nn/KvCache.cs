namespace PureMoE.Nn;

/// <summary>
/// Keys and values of the positions already processed, per attention layer, so that generation feeds only the
/// new tokens: each layer appends its new k/v [B, Hkv, S_new, D] along the sequence axis and attends over all.
/// Use it under <see cref="Tensor.NoGrad"/>: each layer keeps a buffer [B, Hkv, capacity, D] whose capacity doubles
/// as it fills, a new position is written once into its slot, and <see cref="Update"/> returns views of the filled
/// part (attention reads them in place), so a decoding step copies only the new position instead of the whole cache.
/// With gradients recorded (keys or values that require them) it concatenates instead, keeping the graph.
/// </summary>
public sealed class KvCache
{
    private readonly Tensor?[] _keys;
    private readonly Tensor?[] _values;
    private readonly int[] _lengths;

    /// <summary>An empty cache for <paramref name="numLayers"/> attention layers.</summary>
    public KvCache(int numLayers)
    {
        _keys = new Tensor?[numLayers];
        _values = new Tensor?[numLayers];
        _lengths = new int[numLayers];
    }

    /// <summary>Number of layers.</summary>
    public int NumLayers => _keys.Length;

    /// <summary>Number of positions cached for <paramref name="layer"/> (the position offset of its next input).</summary>
    public int Length(int layer) => _lengths[CheckLayer(layer)];

    /// <summary>
    /// Appends new keys and values [B, Hkv, S_new, D] to <paramref name="layer"/> and returns all of them
    /// [B, Hkv, S_past + S_new, D].
    /// </summary>
    public (Tensor Keys, Tensor Values) Update(int layer, Tensor keys, Tensor values)
    {
        CheckLayer(layer);
        if (keys.Rank != 4 || keys.Shape != values.Shape)
            throw new ArgumentException($"KvCache.Update: keys and values must be one shape [B, Hkv, S, D], got {keys.Shape} and {values.Shape}");
        int past = _lengths[layer], length = past + keys.Shape[2];
        if (Autograd.GradMode.IsEnabled && (keys.RequiresGrad || values.RequiresGrad))
        {
            // The graph must reach the new keys and values: concatenated tensors, no shared buffer.
            _keys[layer] = _keys[layer] is Tensor pastK ? Tensor.Concat([pastK.Narrow(2, 0, past), keys], 2) : keys;
            _values[layer] = _values[layer] is Tensor pastV ? Tensor.Concat([pastV.Narrow(2, 0, past), values], 2) : values;
        }
        else
        {
            // The new positions' slots, uploaded once for keys and values.
            var slots = Tensor.ArangeFrom(past, keys.Shape[2], keys.Device);
            _keys[layer] = Append(_keys[layer], past, keys, slots);
            _values[layer] = Append(_values[layer], past, values, slots);
        }
        _lengths[layer] = length;
        return (_keys[layer]!.Narrow(2, 0, length), _values[layer]!.Narrow(2, 0, length));
    }

    /// <summary>Forgets everything (start a new sequence).</summary>
    public void Clear()
    {
        Array.Clear(_keys);
        Array.Clear(_values);
        Array.Clear(_lengths);
    }

    // Writes `added` [B, Hkv, n, D] at positions past.. of a layer's buffer, first moving the buffer to one of twice the
    // capacity (at least 16 positions) when it is full or does not match. Slots past the filled length are zeros, and
    // each is added to once, so the values land exactly.
    private static Tensor Append(Tensor? buffer, int past, Tensor added, Tensor slots)
    {
        int b = added.Shape[0], heads = added.Shape[1], n = added.Shape[2], d = added.Shape[3];
        int needed = past + n;
        bool fits = buffer is not null && buffer.Shape[0] == b && buffer.Shape[1] == heads && buffer.Shape[3] == d
            && buffer.DType == added.DType && buffer.Device.Equals(added.Device) && buffer.Shape[2] >= needed;
        if (!fits)
        {
            int capacity = Math.Max(16, Math.Max(needed, 2 * (buffer?.Shape[2] ?? 0)));
            var grown = Tensor.Zeros(new Shape(b, heads, capacity, d), added.DType, added.Device);
            if (buffer is not null && past > 0) AddAt(grown, Tensor.ArangeFrom(0, past, added.Device), buffer.Narrow(2, 0, past));
            buffer = grown;
        }
        AddAt(buffer!, slots, added);
        return buffer!;
    }

    // buffer[:, :, slots[j], :] += piece[:, :, j, :]: one IndexAdd over the B·Hkv heads.
    private static void AddAt(Tensor buffer, Tensor slots, Tensor piece)
    {
        int outer = buffer.Shape[0] * buffer.Shape[1], capacity = buffer.Shape[2], n = piece.Shape[2], d = buffer.Shape[3];
        if (outer == 0 || n == 0 || d == 0) return;
        buffer.Backend.IndexAdd(buffer.Storage, slots.Storage, piece.Dense().Storage, outer, capacity, n, d);
    }

    private int CheckLayer(int layer)
    {
        if (layer < 0 || layer >= _keys.Length)
            throw new ArgumentOutOfRangeException(nameof(layer), layer, $"KvCache: layer must be in [0, {_keys.Length})");
        return layer;
    }
}
