using PureMoE.Backends;

namespace PureMoE;

// Activation functions; each backward is a fused kernel of (input or output, upstream gradient).
public sealed partial class Tensor
{
    /// <summary>max(x, 0); gradient 1 where x &gt; 0 (0 at the kink, as in PyTorch).</summary>
    public Tensor Relu()
    {
        Tensor x = this;
        return Record("Relu", UnaryKernel(UnaryOp.Relu, x), [x], g => [BinaryKernel(BinaryOp.ReluBackward, x, g, "Relu")]);
    }

    /// <summary>SiLU (swish): x·σ(x).</summary>
    public Tensor Silu()
    {
        Tensor x = this;
        return Record("Silu", UnaryKernel(UnaryOp.Silu, x), [x], g => [BinaryKernel(BinaryOp.SiluBackward, x, g, "Silu")]);
    }

    /// <summary>σ(x) = 1/(1+e⁻ˣ).</summary>
    public Tensor Sigmoid()
    {
        var y = UnaryKernel(UnaryOp.Sigmoid, this);
        return Record("Sigmoid", y, [this], g => [BinaryKernel(BinaryOp.SigmoidBackwardFromOutput, y, g, "Sigmoid")]);
    }

    /// <summary>GELU, tanh approximation (PyTorch's <c>gelu(x, approximate="tanh")</c>).</summary>
    public Tensor Gelu()
    {
        Tensor x = this;
        return Record("Gelu", UnaryKernel(UnaryOp.Gelu, x), [x], g => [BinaryKernel(BinaryOp.GeluBackward, x, g, "Gelu")]);
    }

    /// <summary>tanh x.</summary>
    public Tensor Tanh()
    {
        var y = UnaryKernel(UnaryOp.Tanh, this);
        return Record("Tanh", y, [this], g => [BinaryKernel(BinaryOp.TanhBackwardFromOutput, y, g, "Tanh")]);
    }
}
