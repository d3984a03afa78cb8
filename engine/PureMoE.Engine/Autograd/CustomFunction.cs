using PureMoE.Autograd;

namespace PureMoE;

// A public seam for differentiable operations defined outside the engine (e.g. the expert-parallel token exchange,
// whose backward is the reverse exchange between devices). Ops inside the engine use Record directly.
public sealed partial class Tensor
{
    /// <summary>
    /// Records <paramref name="output"/> as the result of a custom operation on <paramref name="inputs"/>, whose
    /// backward maps the gradient of the output to one gradient (or null) per input, each of its input's shape.
    /// Recorded only when gradients are enabled and an input requires one; returns <paramref name="output"/>.
    /// The output must be a fresh tensor computed without recording (e.g. inside <see cref="NoGrad"/>). The backward
    /// may keep the gradient it is given (the backward pass then never recycles that gradient's memory).
    /// </summary>
    public static Tensor Function(string op, Tensor output, Tensor[] inputs, Func<Tensor, Tensor?[]> backward)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(backward);
        if (output.GradFn is not null)
            throw new ArgumentException($"Tensor.Function({op}): the output already has a recorded operation ({output.GradFn.Op}); compute it without recording");
        if (output.RequiresGrad && output.IsLeaf && GradMode.IsEnabled && inputs.Any(t => t.RequiresGrad))
            throw new ArgumentException($"Tensor.Function({op}): the output is a leaf that requires a gradient of its own");
        foreach (var t in inputs)
            if (ReferenceEquals(t, output)) throw new ArgumentException($"Tensor.Function({op}): the output cannot be one of its inputs");
        int n = inputs.Length;
        return Record(op, output, inputs, g =>
        {
            var grads = backward(g);
            if (grads.Length != n)
                throw new InvalidOperationException($"Tensor.Function({op}) backward returned {grads.Length} gradients for {n} inputs");
            return grads;
        }, keepsGradient: true);
    }
}
