using PureMoE.Autograd;

namespace PureMoE.Nn;

/// <summary>
/// Base class of neural-network layers, like torch.nn.Module. A module owns named parameters and named child
/// modules, both registered explicitly in the constructor; their order of registration is the order of
/// <see cref="NamedParameters"/> and <see cref="StateDict"/>, and the dotted names ("layers.0.self_attn.q_proj.weight")
/// are PyTorch's, so checkpoints map one to one.
/// </summary>
/// <remarks>
/// Subclasses read their parameters through <see cref="GetParameter"/> (typically behind a property) rather than
/// keeping the tensor in a field: <see cref="To(DType)"/> and <see cref="To(Device)"/> replace parameter tensors,
/// and a field would keep pointing at the old one.
/// </remarks>
public abstract class Module
{
    // Ordered lists (not dictionaries) because registration order is part of the contract.
    private readonly List<string> _parameterNames = [];
    private readonly Dictionary<string, Tensor> _parameters = [];
    private readonly List<(string Name, Module Module)> _children = [];

    /// <summary>True in training mode (the default), false after <see cref="Eval"/>.</summary>
    public bool IsTraining { get; private set; } = true;

    /// <summary>
    /// Registers a parameter under <paramref name="name"/> (no dots). It becomes a leaf that requires a gradient,
    /// and its <see cref="Tensor.Name"/> becomes its dotted name once the module is registered in a parent.
    /// Returns the tensor, so constructors can write <c>RegisterParameter("weight", init)</c> inline.
    /// </summary>
    protected Tensor RegisterParameter(string name, Tensor tensor)
    {
        CheckNewName(name);
        var p = tensor.IsLeaf ? tensor : tensor.Detach();
        p.RequiresGrad = true;
        p.Name = name;
        _parameterNames.Add(name);
        _parameters[name] = p;
        return p;
    }

    /// <summary>Registers a child module under <paramref name="name"/> (no dots) and returns it.</summary>
    protected T RegisterModule<T>(string name, T module) where T : Module
    {
        CheckNewName(name);
        if (ReferenceEquals(module, this)) throw new ArgumentException($"RegisterModule: a module cannot contain itself ('{name}')");
        _children.Add((name, module));
        // Parameters carry their full dotted name for messages; registration runs bottom-up (a child is built
        // before its parent registers it), so prefixing here yields the name relative to the root.
        foreach (var (full, p) in module.NamedParameters(name + ".")) p.Name = full;
        return module;
    }

    private void CheckNewName(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('.'))
            throw new ArgumentException($"{GetType().Name}: name '{name}' must be non-empty and contain no '.'");
        if (_parameters.ContainsKey(name) || _children.Any(c => c.Name == name))
            throw new ArgumentException($"{GetType().Name}: '{name}' is already registered");
    }

    /// <summary>This module's own parameter <paramref name="name"/> (not a child's).</summary>
    protected Tensor GetParameter(string name) =>
        _parameters.TryGetValue(name, out var p) ? p
            : throw new KeyNotFoundException($"{GetType().Name}: no parameter '{name}'");

    /// <summary>The direct children with their names, in registration order.</summary>
    public IEnumerable<(string Name, Module Module)> NamedChildren() => _children;

    /// <summary>
    /// All parameters of this module and its descendants with PyTorch-style dotted names, depth first in
    /// registration order (own parameters before children's, as registered).
    /// </summary>
    public IEnumerable<(string Name, Tensor Parameter)> NamedParameters(string prefix = "")
    {
        foreach (var name in _parameterNames)
            yield return (prefix + name, _parameters[name]);
        foreach (var (name, child) in _children)
            foreach (var item in child.NamedParameters(prefix + name + "."))
                yield return item;
    }

    /// <summary>All parameters (the tensors of <see cref="NamedParameters"/>).</summary>
    public IEnumerable<Tensor> Parameters() => NamedParameters().Select(p => p.Parameter);

    /// <summary>Total number of parameter elements.</summary>
    public long ParameterCount => Parameters().Sum(p => (long)p.Numel);

    /// <summary>
    /// The parameters by dotted name, in registration order. The tensors are the live parameters (as in
    /// PyTorch): copy them if they must not change with training.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> StateDict()
    {
        var dict = new OrderedDictionary<string, Tensor>();
        foreach (var (name, p) in NamedParameters()) dict.Add(name, p);
        return dict;
    }

    /// <summary>
    /// Copies values from <paramref name="stateDict"/> into the parameters, in place (converting dtype and device
    /// as needed). With <paramref name="strict"/>, missing keys and unexpected keys are errors; shape mismatches
    /// are always errors. All problems are reported together, and nothing is modified if there is any.
    /// </summary>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> stateDict, bool strict = true) =>
        LoadStateDict(stateDict.ToDictionary(kv => kv.Key, kv => kv.Value.Shape, StringComparer.Ordinal),
            (name, parameter) => parameter.CopyFrom(stateDict[name]), strict);

    /// <summary>
    /// <see cref="LoadStateDict(IReadOnlyDictionary{string, Tensor}, bool)"/> from a source that knows every tensor's
    /// shape before reading it (a checkpoint's header): all checks run on <paramref name="shapes"/>, then
    /// <paramref name="load"/> fills each parameter in place from the source, one at a time, so nothing beside the
    /// model need hold all the values.
    /// </summary>
    internal void LoadStateDict(IReadOnlyDictionary<string, Shape> shapes, Action<string, Tensor> load, bool strict = true)
    {
        var own = NamedParameters().ToList();
        var ownNames = own.Select(p => p.Name).ToHashSet();
        var missing = new List<string>();
        var mismatched = new List<string>();
        foreach (var (name, p) in own)
        {
            if (!shapes.TryGetValue(name, out var shape)) { missing.Add(name); continue; }
            if (shape != p.Shape) mismatched.Add($"{name}: checkpoint {shape}, model {p.Shape}");
        }
        var unexpected = shapes.Keys.Where(k => !ownNames.Contains(k)).ToList();

        var problems = new List<string>();
        if (mismatched.Count > 0) problems.Add("shape mismatch for " + string.Join("; ", mismatched));
        if (strict && missing.Count > 0) problems.Add("missing keys: " + string.Join(", ", missing));
        if (strict && unexpected.Count > 0) problems.Add("unexpected keys: " + string.Join(", ", unexpected));
        if (problems.Count > 0)
            throw new ArgumentException($"LoadStateDict ({GetType().Name}): " + string.Join(" | ", problems));

        // Every check passed: only now touch the parameters.
        using (GradMode.NoGrad())
            foreach (var (name, p) in own)
                if (shapes.ContainsKey(name)) load(name, p);
    }

    /// <summary>Clears the gradient of every parameter.</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters()) p.ZeroGrad();
    }

    /// <summary>Sets training mode on this module and all descendants. Returns this.</summary>
    public Module Train(bool mode = true)
    {
        IsTraining = mode;
        foreach (var (_, child) in _children) child.Train(mode);
        return this;
    }

    /// <summary>Sets evaluation mode (<c>Train(false)</c>). Returns this.</summary>
    public Module Eval() => Train(false);

    /// <summary>
    /// Converts every parameter to <paramref name="dtype"/>, replacing the tensors (gradients are dropped).
    /// Returns this.
    /// </summary>
    public Module To(DType dtype) => Replace(p => p.To(dtype));

    /// <summary>Moves every parameter to <paramref name="device"/>, replacing the tensors (gradients are dropped). Returns this.</summary>
    public Module To(Device device) => Replace(p => p.To(device));

    private Module Replace(Func<Tensor, Tensor> convert)
    {
        using (GradMode.NoGrad())
        {
            foreach (var name in _parameterNames)
            {
                var old = _parameters[name];
                var converted = convert(old);
                // A no-op conversion returns the same tensor; keep it (and its gradient) then.
                if (ReferenceEquals(converted, old)) continue;
                var p = converted.IsContiguous && converted.Offset == 0 ? converted.Detach() : converted.Clone().Detach();
                p.RequiresGrad = true;
                p.Name = old.Name;
                _parameters[name] = p;
            }
        }
        foreach (var (_, child) in _children) child.Replace(convert);
        return this;
    }
}
