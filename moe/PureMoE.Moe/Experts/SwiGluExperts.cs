using PureMoE.Nn;

namespace PureMoE.Moe.Experts;

/// <summary>
/// E SwiGLU experts, Expert(x) = W2·(silu(W1·x) ⊙ W3·x), stored as Hugging Face Mixtral names
/// (experts.{e}.w1/w2/w3.weight) and run over the expert-major rows as one fused op (Tensor.GroupedSwiGlu: three
/// grouped matrix products, each group its own weights, with the silu·mul and its backward in one pass each).
/// </summary>
public sealed class SwiGluExperts : Module
{
    /// <summary>Creates E experts of width d → ff → d.</summary>
    public SwiGluExperts(int experts, int hiddenSize, int intermediateSize, Rng rng, double initStd = 0.02,
        DType dtype = DType.Float32, Device? device = null)
    {
        // Children are named "0" … "E−1", so a layer registering this as "experts" gives HF's experts.{e}.w1.weight.
        for (int e = 0; e < experts; e++)
            _experts.Add(RegisterModule(e.ToString(System.Globalization.CultureInfo.InvariantCulture),
                new SwiGluMlp(hiddenSize, intermediateSize, rng, initStd, dtype, device)));
    }

    private readonly List<SwiGluMlp> _experts = [];

    /// <summary>The experts, one module each.</summary>
    public IReadOnlyList<SwiGluMlp> List => _experts;

    /// <summary>Number of experts.</summary>
    public int Count => List.Count;

    /// <summary>Runs expert e on its group of rows of <paramref name="rows"/> [N, d]; groups are consecutive.</summary>
    public Tensor Forward(Tensor rows, int[] groupSizes)
    {
        var w1 = List.Select(e => e.W1.Weight).ToArray();
        var w3 = List.Select(e => e.W3.Weight).ToArray();
        var w2 = List.Select(e => e.W2.Weight).ToArray();
        // One fused op: silu·mul in one pass each way, the two input-gradient products accumulated in place.
        return Tensor.GroupedSwiGlu(rows, w1, w3, w2, groupSizes);
    }
}
