namespace PureMoE.Nn;

/// <summary>
/// A fully connected layer y = x·Wᵀ + b (torch.nn.Linear): weight [out, in] as in PyTorch checkpoints, optional
/// bias [out]. Works on inputs [..., in].
/// </summary>
public sealed class Linear : Module
{
    /// <summary>
    /// Creates the layer with weights drawn from <paramref name="rng"/> (deterministic). With
    /// <paramref name="initStd"/> the weight is Normal(0, std²) and the bias zero (Hugging Face's
    /// _init_weights); without it both are Uniform(±1/√in), PyTorch's default.
    /// </summary>
    public Linear(int inFeatures, int outFeatures, Rng rng, bool bias = true, double? initStd = null,
        DType dtype = DType.Float32, Device? device = null)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        var shape = new Shape(outFeatures, inFeatures);
        double bound = 1.0 / Math.Sqrt(Math.Max(inFeatures, 1));
        RegisterParameter("weight", initStd is double std
            ? Tensor.Randn(shape, rng, std, dtype, device)
            : Tensor.Uniform(shape, rng, -bound, bound, dtype, device));
        if (bias)
            RegisterParameter("bias", initStd is not null
                ? Tensor.Zeros(new Shape(outFeatures), dtype, device)
                : Tensor.Uniform(new Shape(outFeatures), rng, -bound, bound, dtype, device));
        HasBias = bias;
    }

    /// <summary>Input features.</summary>
    public int InFeatures { get; }

    /// <summary>Output features.</summary>
    public int OutFeatures { get; }

    /// <summary>Whether the layer adds a bias.</summary>
    public bool HasBias { get; }

    /// <summary>The weight [out, in].</summary>
    public Tensor Weight => GetParameter("weight");

    /// <summary>The bias [out], or null.</summary>
    public Tensor? Bias => HasBias ? GetParameter("bias") : null;

    /// <summary>x [..., in] → [..., out].</summary>
    public Tensor Forward(Tensor x)
    {
        if (x.Shape[-1] != InFeatures)
            throw new ArgumentException($"Linear({Weight.Name ?? "weight"}): input {x.Shape} needs last dimension {InFeatures}");
        // One GEMM with the weight transposed by a flag; the backward hands the weight its gradient in its own layout.
        var y = x.Linear(Weight);
        return Bias is Tensor b ? y.Add(b) : y;
    }
}
