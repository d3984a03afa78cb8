namespace PureMoE.Autograd;

/// <summary>
/// One recorded operation: its inputs and the function that maps the gradient of its output to the gradients of
/// its inputs (null where an input needs none). Built by ops; walked by <see cref="Backprop"/>.
/// </summary>
internal sealed class Node(string op, Tensor[] inputs, Func<Tensor, Tensor?[]> backward)
{
    public string Op { get; } = op;
    public Tensor[] Inputs { get; } = inputs;
    public Func<Tensor, Tensor?[]> Backward { get; } = backward;
}
