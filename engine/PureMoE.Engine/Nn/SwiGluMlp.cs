namespace PureMoE.Nn;

/// <summary>
/// The gated feed-forward network of Llama and of each Mixtral expert: y = w2(silu(w1·x) ⊙ w3·x), no biases.
/// w1 is the gate projection, w3 the up projection, w2 the down projection (Hugging Face Mixtral's names).
/// </summary>
public sealed class SwiGluMlp : Module
{
    /// <summary>Creates the network with Normal(0, initStd²) weights from <paramref name="rng"/> (w1, w2, w3 in that order).</summary>
    public SwiGluMlp(int hiddenSize, int intermediateSize, Rng rng, double initStd = 0.02,
        DType dtype = DType.Float32, Device? device = null)
    {
        W1 = RegisterModule("w1", new Linear(hiddenSize, intermediateSize, rng, bias: false, initStd, dtype, device));
        W2 = RegisterModule("w2", new Linear(intermediateSize, hiddenSize, rng, bias: false, initStd, dtype, device));
        W3 = RegisterModule("w3", new Linear(hiddenSize, intermediateSize, rng, bias: false, initStd, dtype, device));
    }

    /// <summary>Gate projection [ff, d].</summary>
    public Linear W1 { get; }

    /// <summary>Down projection [d, ff].</summary>
    public Linear W2 { get; }

    /// <summary>Up projection [ff, d].</summary>
    public Linear W3 { get; }

    /// <summary>x [..., d] → [..., d].</summary>
    public Tensor Forward(Tensor x) => W2.Forward(W1.Forward(x).Silu().Mul(W3.Forward(x)));
}
