using PureMoE.Autograd;

namespace PureMoE.Optim;

/// <summary>
/// Adam with decoupled weight decay (torch.optim.AdamW). For each parameter p with gradient g, at its step t:
/// p ← p·(1 − lr·λ); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; p ← p − lr·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε).
/// Parameters without a gradient are skipped and their step does not advance, as in PyTorch.
/// </summary>
public sealed class AdamW
{
    private readonly Tensor[] _parameters;
    private readonly string[] _keys;
    private readonly ParamState?[] _state;

    /// <summary>The per-parameter state: step count and the two moment estimates (created on the first step).</summary>
    private sealed class ParamState(Tensor expAvg, Tensor expAvgSq)
    {
        public long Step;
        public Tensor ExpAvg = expAvg;
        public Tensor ExpAvgSq = expAvgSq;
    }

    /// <summary>
    /// Creates the optimizer over <paramref name="parameters"/> (leaf tensors; their <see cref="Tensor.Name"/>s,
    /// when set and unique, key the state dict, else their positions do). Defaults are PyTorch's.
    /// </summary>
    public AdamW(IEnumerable<Tensor> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999,
        double eps = 1e-8, double weightDecay = 0.01)
    {
        _parameters = parameters.ToArray();
        if (lr < 0 || eps < 0 || weightDecay < 0 || beta1 is < 0 or >= 1 || beta2 is < 0 or >= 1)
            throw new ArgumentException($"AdamW: invalid hyperparameters lr={lr}, betas=({beta1}, {beta2}), eps={eps}, weight_decay={weightDecay}");
        foreach (var p in _parameters)
            if (!p.IsLeaf || !p.DType.IsFloatingPoint())
                throw new ArgumentException($"AdamW: parameter {p} must be a floating-point leaf tensor");
        var names = _parameters.Select(p => p.Name).ToArray();
        bool namesUsable = names.All(n => n is not null) && names.Distinct().Count() == names.Length;
        _keys = namesUsable ? [.. names.Select(n => n!)] : [.. Enumerable.Range(0, _parameters.Length).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture))];
        _state = new ParamState?[_parameters.Length];
        LearningRate = lr;
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        WeightDecay = weightDecay;
    }

    /// <summary>Learning rate; set it before each <see cref="Step"/> to follow a schedule.</summary>
    public double LearningRate { get; set; }

    /// <summary>β₁: decay of the first-moment average.</summary>
    public double Beta1 { get; }

    /// <summary>β₂: decay of the second-moment average.</summary>
    public double Beta2 { get; }

    /// <summary>ε added to the denominator.</summary>
    public double Eps { get; }

    /// <summary>λ: decoupled weight decay (multiplied by the learning rate).</summary>
    public double WeightDecay { get; set; }

    /// <summary>The parameters being optimised.</summary>
    public IReadOnlyList<Tensor> Parameters => _parameters;

    /// <summary>Steps taken (the largest per-parameter step count).</summary>
    public long StepCount => _state.Max(s => s?.Step ?? 0);

    /// <summary>
    /// Updates every parameter that has a gradient, in place. The parameters of each device are handed to its
    /// backend together (<see cref="Backends.IBackend.AdamW(IReadOnlyList{Backends.AdamWSlot}, double, double, double, double, double)"/>),
    /// so a GPU updates many per launch; every element is computed as the single-tensor update computes it.
    /// </summary>
    public void Step()
    {
        using var _ = GradMode.NoGrad();
        var byBackend = new Dictionary<Backends.IBackend, List<Backends.AdamWSlot>>(ReferenceEqualityComparer.Instance);
        for (int i = 0; i < _parameters.Length; i++)
        {
            var p = _parameters[i];
            if (p.Grad is not Tensor grad) continue;
            if (!p.IsContiguous || p.Offset != 0)
                throw new InvalidOperationException($"AdamW: parameter {p} must own contiguous storage to be updated in place");
            var st = _state[i] ??= NewState(p);
            st.Step++;
            double bc1 = 1 - Math.Pow(Beta1, st.Step);
            double bc2 = 1 - Math.Pow(Beta2, st.Step);
            var g = grad.DType == p.DType ? grad.Dense() : grad.To(p.DType).Dense();
            if (!byBackend.TryGetValue(p.Backend, out var slots)) byBackend.Add(p.Backend, slots = []);
            slots.Add(new Backends.AdamWSlot(p.Storage, g.Storage, st.ExpAvg.Storage, st.ExpAvgSq.Storage, p.Numel, bc1, bc2));
        }
        foreach (var (backend, slots) in byBackend)
            backend.AdamW(slots, LearningRate, Beta1, Beta2, Eps, WeightDecay);
    }

    /// <summary>
    /// Moments for <paramref name="p"/>, owned by no <see cref="DeviceScope"/> (they live as long as the optimizer):
    /// zero, or uninitialised when a checkpoint is about to fill them.
    /// </summary>
    private static ParamState NewState(Tensor p, bool zeroed = true)
    {
        using var _ = DeviceScope.Suspend();
        return zeroed ? new ParamState(Tensor.ZerosLike(p), Tensor.ZerosLike(p))
            : new ParamState(Tensor.Empty(p.Shape, p.DType, p.Device), Tensor.Empty(p.Shape, p.DType, p.Device));
    }

    /// <summary>Clears the gradients of all parameters.</summary>
    public void ZeroGrad()
    {
        foreach (var p in _parameters) p.ZeroGrad();
    }

    /// <summary>
    /// The optimizer state for checkpointing: for each parameter that has taken a step, "{key}.step" (int64
    /// scalar), "{key}.exp_avg" and "{key}.exp_avg_sq" (parameter-shaped). The tensors are copies.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> StateDict() => StateDict(copy: true);

    /// <summary>
    /// <see cref="StateDict()"/>; with <paramref name="copy"/> false the moments are the optimizer's own tensors, not
    /// copies (twice the model's size saved in memory when a checkpoint is written): read them before the next
    /// <see cref="Step"/> changes them, and do not write to them.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> StateDict(bool copy)
    {
        var dict = new OrderedDictionary<string, Tensor>();
        using var _ = GradMode.NoGrad();
        for (int i = 0; i < _parameters.Length; i++)
        {
            if (_state[i] is not ParamState st) continue;
            dict.Add(_keys[i] + ".step", Tensor.FromArray([st.Step], []));
            dict.Add(_keys[i] + ".exp_avg", copy ? st.ExpAvg.Clone() : st.ExpAvg);
            dict.Add(_keys[i] + ".exp_avg_sq", copy ? st.ExpAvgSq.Clone() : st.ExpAvgSq);
        }
        return dict;
    }

    /// <summary>
    /// Restores state saved by <see cref="StateDict()"/>. Unknown keys, incomplete entries and shape mismatches
    /// are reported together, and nothing is changed if there is any. Parameters absent from the dict get fresh state.
    /// </summary>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> stateDict) =>
        LoadState(stateDict.ToDictionary(kv => kv.Key, kv => kv.Value.Shape, StringComparer.Ordinal),
            key => stateDict[key], (key, moment) => moment.CopyFrom(stateDict[key]));

    /// <summary>
    /// <see cref="LoadStateDict(IReadOnlyDictionary{string, Tensor})"/> from a safetensors file written from
    /// <see cref="StateDict()"/> (for example by <see cref="IO.TensorIO.Save"/>): the checks run on the file's header,
    /// then each moment is read from the file straight into the optimizer's own tensor, so the state is never held
    /// twice (a resumed run of a 100M-parameter model would otherwise hold 0.85 GB of moments once more).
    /// </summary>
    public void LoadStateDict(IO.SafetensorsFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        LoadState(file.Names.ToDictionary(n => n, n => new Shape(file.GetInfo(n).Shape), StringComparer.Ordinal),
            file.ReadTensor, file.ReadInto);
    }

    // The checks on every key and shape first; only then each parameter's state: its step from readStep, its moments
    // filled in place by readInto.
    private void LoadState(IReadOnlyDictionary<string, Shape> shapes, Func<string, Tensor> readStep, Action<string, Tensor> readInto)
    {
        var problems = new List<string>();
        var known = new HashSet<string>();
        for (int i = 0; i < _parameters.Length; i++)
        {
            string k = _keys[i];
            string[] parts = [k + ".step", k + ".exp_avg", k + ".exp_avg_sq"];
            known.UnionWith(parts);
            int present = parts.Count(shapes.ContainsKey);
            if (present == 0) continue;
            if (present < 3) { problems.Add($"'{k}' needs step, exp_avg and exp_avg_sq"); continue; }
            if (shapes[parts[0]].Numel != 1) problems.Add($"{parts[0]}: expected one value, got {shapes[parts[0]]}");
            foreach (var key in parts[1..])
                if (shapes[key] != _parameters[i].Shape)
                    problems.Add($"{key}: checkpoint {shapes[key]}, parameter {_parameters[i].Shape}");
        }
        problems.AddRange(shapes.Keys.Where(k => !known.Contains(k)).Select(k => $"unexpected key {k}"));
        if (problems.Count > 0) throw new ArgumentException("AdamW.LoadStateDict: " + string.Join("; ", problems));

        // Into new state, swapped in at the end: a read that fails part-way leaves the optimizer as it was.
        var loaded = new ParamState?[_parameters.Length];
        using (GradMode.NoGrad())
            for (int i = 0; i < _parameters.Length; i++)
            {
                string k = _keys[i];
                if (!shapes.ContainsKey(k + ".step")) continue;
                var st = NewState(_parameters[i], zeroed: false);
                st.Step = (long)readStep(k + ".step").Item();
                readInto(k + ".exp_avg", st.ExpAvg);
                readInto(k + ".exp_avg_sq", st.ExpAvgSq);
                loaded[i] = st;
            }
        loaded.CopyTo(_state, 0);
    }
}
