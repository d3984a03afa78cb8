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

    /// <summary>
    /// Buffers the op made for its backward alone (see <see cref="Tensor.Record"/>); the backward pass gives them
    /// back after this node's backward when it runs in a scope that reuses host memory.
    /// </summary>
    public Tensor[]? Saved { get; init; }

    /// <summary>Set once <see cref="Saved"/> went back: the node's backward cannot run again.</summary>
    public bool Spent { get; set; }
}
