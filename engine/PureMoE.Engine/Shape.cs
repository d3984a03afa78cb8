using System.Collections;

namespace PureMoE;

/// <summary>
/// The dimensions of a tensor. Immutable; equality is by value. Printed like "[4,8]" so error messages can name it.
/// </summary>
public readonly struct Shape : IEquatable<Shape>, IReadOnlyList<int>
{
    private readonly int[]? _dims;

    /// <summary>Creates a shape from its dimensions (copied). Every dimension must be ≥ 0.</summary>
    public Shape(params int[] dims)
    {
        foreach (int d in dims)
            if (d < 0) throw new ArgumentException($"Shape: negative dimension in [{string.Join(",", dims)}]");
        _dims = (int[])dims.Clone();
        long n = 1;
        foreach (int d in dims)
        {
            n *= d;
            if (n > int.MaxValue) throw new ArgumentException($"Shape: [{string.Join(",", dims)}] has more than 2^31-1 elements");
        }
    }

    /// <summary>Number of dimensions (0 for a scalar).</summary>
    public int Rank => _dims?.Length ?? 0;

    /// <summary>Total number of elements (1 for a scalar).</summary>
    public int Numel
    {
        get
        {
            int n = 1;
            if (_dims != null) foreach (int d in _dims) n *= d;
            return n;
        }
    }

    /// <summary>Dimension <paramref name="i"/>; negative indices count from the end.</summary>
    public int this[int i] => Dims[i < 0 ? i + Rank : i];

    int IReadOnlyCollection<int>.Count => Rank;

    /// <summary>The dimensions as a read-only span.</summary>
    public ReadOnlySpan<int> Dims => _dims ?? [];

    /// <summary>A copy of the dimensions.</summary>
    public int[] ToArray() => Dims.ToArray();

    /// <summary>Normalises an axis (negative counts from the end) and checks it is in range.</summary>
    public int Axis(int axis, string op)
    {
        int a = axis < 0 ? axis + Rank : axis;
        if (Rank == 0 || a < 0 || a >= Rank)
            throw new ArgumentException($"{op}: axis {axis} is out of range for shape {this}");
        return a;
    }

    /// <summary>Row-major (C-order) strides of a contiguous tensor of this shape.</summary>
    public int[] ContiguousStrides()
    {
        var s = new int[Rank];
        int acc = 1;
        for (int i = Rank - 1; i >= 0; i--) { s[i] = acc; acc *= Dims[i]; }
        return s;
    }

    /// <summary>The NumPy broadcast of two shapes, or an error naming both.</summary>
    public static Shape Broadcast(Shape a, Shape b, string op)
    {
        int r = Math.Max(a.Rank, b.Rank);
        var dims = new int[r];
        for (int i = 0; i < r; i++)
        {
            int da = i < r - a.Rank ? 1 : a.Dims[i - (r - a.Rank)];
            int db = i < r - b.Rank ? 1 : b.Dims[i - (r - b.Rank)];
            if (da != db && da != 1 && db != 1)
                throw new ArgumentException($"{op}: shapes {a} and {b} cannot be broadcast (dimension {i}: {da} vs {db})");
            dims[i] = da == 1 ? db : da;
        }
        return new Shape(dims);
    }

    /// <inheritdoc />
    public bool Equals(Shape other) => Dims.SequenceEqual(other.Dims);
    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is Shape s && Equals(s);
    /// <inheritdoc />
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (int d in Dims) h.Add(d);
        return h.ToHashCode();
    }
    /// <summary>Value equality.</summary>
    public static bool operator ==(Shape a, Shape b) => a.Equals(b);
    /// <summary>Value inequality.</summary>
    public static bool operator !=(Shape a, Shape b) => !a.Equals(b);
    /// <summary>Implicit conversion from an array of dimensions.</summary>
    public static implicit operator Shape(int[] dims) => new(dims);
    /// <summary>"[4,8]"; "[]" for a scalar.</summary>
    public override string ToString() => "[" + string.Join(",", ToArray()) + "]";
    /// <inheritdoc />
    public IEnumerator<int> GetEnumerator() => ((IEnumerable<int>)ToArray()).GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
