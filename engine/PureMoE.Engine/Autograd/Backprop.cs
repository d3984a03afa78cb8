namespace PureMoE.Autograd;

/// <summary>Reverse-mode differentiation over the recorded graph.</summary>
internal static class Backprop
{
    /// <summary>
    /// Propagates <paramref name="seed"/> (the gradient of <paramref name="root"/>) to every leaf that requires a
    /// gradient, adding into the leaves' <see cref="Tensor.Grad"/>.
    /// </summary>
    public static void Run(Tensor root, Tensor seed)
    {
        var order = TopologicalOrder(root);
        var grads = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance) { [root] = seed };
        // Counts the pending gradients per storage; a consumed gradient's array goes back to the pool (see there).
        var recycler = new GradientRecycler();
        recycler.Hold(seed);
        using var _ = GradMode.NoGrad();
        // Walk from the root towards the leaves: every consumer of a tensor is visited before the tensor itself.
        for (int i = order.Count - 1; i >= 0; i--)
        {
            Tensor t = order[i];
            if (!grads.Remove(t, out Tensor? g)) continue;
            if (t.GradFn is null)
            {
                if (t.RequiresGrad)
                {
                    t.AccumulateGrad(g);
                    if (ReferenceEquals(t.Grad?.Storage, g.Storage)) recycler.Keep(g);
                }
                recycler.Drop(g);
                continue;
            }
            if (t.GradFn.Spent)
                throw new InvalidOperationException(
                    $"{t.GradFn.Op} backward: the buffers it saved for its backward went back to the host-array pool after an " +
                    "earlier backward pass through it (inside a DeviceScope that reuses host memory); run one backward pass per forward");
            if (t.GradFn.KeepsGradient) recycler.Keep(g);
            Tensor?[]? inputGrads = null;
            recycler.BeginBackward(t.GradFn);
            try
            {
                inputGrads = t.GradFn.Backward(g);
            }
            finally
            {
                recycler.EndBackward(inputGrads);   // its temporaries go back
            }
            recycler.ReleaseSaved(t.GradFn, inputGrads);
            Tensor[] inputs = t.GradFn.Inputs;
            // Count every returned gradient before dropping any: two of them, or one and g, may share a storage.
            foreach (var ig in inputGrads)
                if (ig is not null) recycler.Hold(ig);
            for (int j = 0; j < inputs.Length; j++)
            {
                Tensor? ig = inputGrads[j];
                if (ig is null) continue;
                if (!inputs[j].RequiresGrad)
                {
                    recycler.Drop(ig);
                    continue;
                }
                if (ig.Shape != inputs[j].Shape)
                    throw new InvalidOperationException(
                        $"{t.GradFn.Op} backward: gradient shape {ig.Shape} does not match input shape {inputs[j].Shape}");
                if (grads.TryGetValue(inputs[j], out Tensor? prev))
                {
                    var sum = prev.Add(ig).AsFreshGradient();
                    recycler.Hold(sum);
                    recycler.Drop(prev);
                    recycler.Drop(ig);
                    grads[inputs[j]] = sum;
                }
                else
                {
                    grads[inputs[j]] = ig;
                }
            }
            recycler.Drop(g);
        }
    }

    // Iterative depth-first post-order (a deep model must not overflow the stack).
    private static List<Tensor> TopologicalOrder(Tensor root)
    {
        var order = new List<Tensor>();
        var visited = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<(Tensor Tensor, int NextInput)>();
        stack.Push((root, 0));
        visited.Add(root);
        while (stack.Count > 0)
        {
            var (t, next) = stack.Pop();
            Tensor[] inputs = t.GradFn?.Inputs ?? [];
            if (next < inputs.Length)
            {
                stack.Push((t, next + 1));
                Tensor child = inputs[next];
                if (child.RequiresGrad && visited.Add(child)) stack.Push((child, 0));
            }
            else
            {
                order.Add(t);
            }
        }
        return order;
    }
}
