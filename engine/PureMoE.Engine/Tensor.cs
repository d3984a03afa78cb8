using PureMoE.Autograd;
using PureMoE.Backends;

namespace PureMoE;

/// <summary>
/// An n-dimensional array on one device, with reverse-mode autograd. A tensor is a view (shape, strides, offset)
/// of a <see cref="Backends.Storage"/>; reshape, permute, slicing and expand make views without copying where
/// they can. Operations (in the Ops folder, each with its backward beside its forward) record themselves for
/// <see cref="Backward()"/> when an input requires a gradient and <see cref="GradMode"/> is enabled.
/// </summary>
public sealed partial class Tensor
{
    internal Tensor(Storage storage, Shape shape, int[] strides, int offset, Device device)
    {
        Storage = storage;
        Shape = shape;
        Strides = strides;
        Offset = offset;
        Device = device;
    }

    internal Tensor(Storage storage, Shape shape, Device device)
        : this(storage, shape, shape.ContiguousStrides(), 0, device) { }

    /// <summary>The dimensions.</summary>
    public Shape Shape { get; }

    /// <summary>The element type.</summary>
    public DType DType => Storage.DType;

    /// <summary>The device the data lives on.</summary>
    public Device Device { get; }

    /// <summary>The buffer this tensor views.</summary>
    internal Storage Storage { get; }

    /// <summary>Element strides, one per dimension.</summary>
    internal int[] Strides { get; }

    /// <summary>Element offset of the first element in <see cref="Storage"/>.</summary>
    internal int Offset { get; }

    /// <summary>The recorded operation that produced this tensor (null for leaves).</summary>
    internal Node? GradFn { get; private set; }

    /// <summary>Number of dimensions.</summary>
    public int Rank => Shape.Rank;

    /// <summary>Number of elements.</summary>
    public int Numel => Shape.Numel;

    /// <summary>Size of dimension <paramref name="axis"/> (negative counts from the end).</summary>
    public int Size(int axis) => Shape[Shape.Axis(axis, "Size")];

    /// <summary>An optional name (parameters get their dotted name), used in messages.</summary>
    public string? Name { get; set; }

    private bool _requiresGrad;

    /// <summary>
    /// Whether gradients flow to this tensor. Set it on leaves (parameters, inputs to check); results of ops
    /// inherit it from their inputs.
    /// </summary>
    public bool RequiresGrad
    {
        get => _requiresGrad;
        set
        {
            if (value && !DType.IsFloatingPoint())
                throw new InvalidOperationException($"RequiresGrad: only floating-point tensors can require gradients, not {DType.Name()}");
            if (!value && GradFn is not null)
                throw new InvalidOperationException("RequiresGrad: cannot turn off on a non-leaf tensor; use Detach()");
            _requiresGrad = value;
        }
    }

    /// <summary>The accumulated gradient of a leaf after <see cref="Backward()"/> (null before).</summary>
    public Tensor? Grad { get; set; }

    /// <summary>True for tensors not produced by a recorded operation.</summary>
    public bool IsLeaf => GradFn is null;

    /// <summary>True when the elements are laid out densely in row-major order.</summary>
    public bool IsContiguous
    {
        get
        {
            int expected = 1;
            for (int i = Rank - 1; i >= 0; i--)
            {
                if (Shape[i] != 1 && Strides[i] != expected) return false;
                expected *= Shape[i];
            }
            return true;
        }
    }

    /// <summary>The backend of this tensor's device.</summary>
    internal IBackend Backend => Device.Backend;

    /// <summary>The operand form used by broadcasting kernels, with strides aligned to <paramref name="outShape"/>.</summary>
    internal Strided AsStrided(Shape outShape)
    {
        int r = outShape.Rank, lead = r - Rank;
        var strides = new int[r];
        for (int i = 0; i < Rank; i++)
            strides[lead + i] = Shape[i] == 1 && outShape[lead + i] != 1 ? 0 : Strides[i];
        return new Strided(Storage, Offset, strides);
    }

    // ---------------------------------------------------------------- autograd

    /// <summary>
    /// Records <paramref name="output"/> as produced by <paramref name="op"/> from <paramref name="inputs"/>, if
    /// recording is on and any input requires a gradient. Returns the output. <paramref name="keepsGradient"/>: the
    /// backward may keep its output gradient past its return (custom functions), so the backward pass must not
    /// recycle it. <paramref name="saved"/>: buffers the op made for its backward alone and hands to nobody else (a
    /// SwiGLU's pre-activations, attention's probabilities); in a scope that reuses host memory they go back to the
    /// pool once the backward has run, or at once when nothing is recorded.
    /// </summary>
    internal static Tensor Record(string op, Tensor output, Tensor[] inputs, Func<Tensor, Tensor?[]> backward,
        bool keepsGradient = false, Tensor[]? saved = null)
    {
        bool any = false;
        if (GradMode.IsEnabled)
            foreach (var t in inputs) any |= t.RequiresGrad;
        if (!any)
        {
            if (saved is not null)
                foreach (var t in saved) t.Recycle();
            return output;
        }
        output._requiresGrad = true;
        output.GradFn = new Node(op, inputs, backward, keepsGradient) { Saved = saved };
        return output;
    }

    /// <summary>
    /// For an op's own buffer that nothing reads any more (a forward temporary, such as attention's scores once turned
    /// into probabilities): inside a scope that reuses host memory and owns it, its host array goes back to the pool
    /// at once for the allocations after it; elsewhere nothing happens. The tensor must not be used again.
    /// </summary>
    internal void Recycle()
    {
        if (Storage is CpuStorage host && DeviceScope.Current is { } scope) scope.ReturnEarly(host);
    }

    /// <summary>
    /// Computes the gradient of this scalar with respect to every leaf that requires one, adding it into their
    /// <see cref="Grad"/>. Gradients accumulate across calls until zeroed.
    /// </summary>
    public void Backward()
    {
        if (Numel != 1)
            throw new InvalidOperationException($"Backward: needs a scalar (one element), got shape {Shape}; pass a gradient with Backward(grad)");
        Backward(OnesLike(this));
    }

    /// <summary>Backward from a given output gradient of this tensor's shape.</summary>
    public void Backward(Tensor gradient)
    {
        if (!RequiresGrad)
            throw new InvalidOperationException("Backward: this tensor does not require a gradient (no input requires one, or it was made under NoGrad)");
        if (gradient.Shape != Shape)
            throw new ArgumentException($"Backward: gradient shape {gradient.Shape} differs from tensor shape {Shape}");
        CheckSameDevice("Backward", this, gradient);
        if (gradient.DType != DType)
            throw new ArgumentException($"Backward: gradient dtype {gradient.DType.Name()} differs from tensor dtype {DType.Name()} ({Shape})");
        Backprop.Run(this, gradient);
    }

    /// <summary>
    /// Set by a backward function on a gradient it has just allocated and hands out once, nowhere else referenced:
    /// the first leaf it reaches may keep it as its <see cref="Grad"/> instead of a copy (the mark is then cleared).
    /// </summary>
    internal bool IsFreshGradient { get; private set; }

    /// <summary>Marks this tensor as a fresh, unshared gradient buffer (see <see cref="IsFreshGradient"/>); returns it.</summary>
    internal Tensor AsFreshGradient()
    {
        IsFreshGradient = true;
        return this;
    }

    /// <summary>
    /// Adds a gradient into <see cref="Grad"/>: the first time a contiguous copy, or the gradient itself when it is
    /// a fresh, unshared buffer (<see cref="IsFreshGradient"/>) of this tensor's dtype.
    /// </summary>
    internal void AccumulateGrad(Tensor g)
    {
        if (g.DType != DType) g = g.To(DType);
        if (Grad is not null) Grad.AddInPlace(g);
        else if (g.IsFreshGradient && g.GradFn is null && g.IsContiguous && g.Offset == 0 && g.Storage.Length == g.Numel && g.Shape == Shape)
        {
            g.IsFreshGradient = false;
            Grad = g;
        }
        else Grad = g.Clone();
    }

    /// <summary>Sets <see cref="Grad"/> to null.</summary>
    public void ZeroGrad() => Grad = null;

    /// <summary>A tensor sharing this one's data but cut from the graph (no gradient flows through it).</summary>
    public Tensor Detach() => new(Storage, Shape, Strides, Offset, Device) { Name = Name };

    /// <summary>Disables graph recording until disposed: <c>using (Tensor.NoGrad()) { ... }</c>.</summary>
    public static IDisposable NoGrad() => GradMode.NoGrad();

    /// <summary>"Tensor[2,3] float32 cpu".</summary>
    public override string ToString() => $"Tensor{Shape} {DType.Name()} {Device}{(Name is null ? "" : " " + Name)}";
}
