namespace PureMoE.Autograd;

/// <summary>
/// One recorded operation: its inputs and the function that maps the gradient of its output to the gradients of
/// its inputs (null where an input needs none). Built by ops; walked by <see cref="Backprop"/>.
/// </summary>
internal sealed class Node(string op, Tensor[] inputs, Func<Tensor, Tensor?[]> backward, bool keepsGradient = false)
{
    public string Op { get; } = op;
    public Tensor[] Inputs { get; } = inputs;
    public Func<Tensor, Tensor?[]> Backward { get; } = backward;

    /// <summary>
    /// Whether the backward may keep the output gradient it is given after it returns (a custom function's may: the
    /// expert-parallel layer collects its outputs' gradients for one later node), so it must not be recycled.
    /// </summary>
    public bool KeepsGradient { get; } = keepsGradient;
}
