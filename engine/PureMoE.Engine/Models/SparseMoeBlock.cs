using PureMoE.Nn;

namespace PureMoE.Models;

/// <summary>
/// Mixtral's sparse mixture-of-experts feed-forward layer (Hugging Face MixtralSparseMoeBlock): a linear router
/// (gate) scores E experts per token; each token goes to its top-k experts, whose SwiGLU outputs are summed with
/// the renormalised router probabilities as weights.
/// </summary>
/// <remarks>
/// This is the plain algorithm, written for clarity and as the reference for faster implementations: the
/// routing table is read back to the host once per call, then a loop over experts gathers each expert's tokens
/// with IndexSelect, runs the expert on them as one batch, and adds the weighted result back with IndexAdd.
/// Every step is a recorded op, so gradients reach the experts and, through the routing weights, the gate.
/// </remarks>
public sealed class SparseMoeBlock : Module, IMoeBlock
{
    /// <summary>Creates the router and <paramref name="numExperts"/> experts, weights Normal(0, initStd²) from <paramref name="rng"/>.</summary>
    public SparseMoeBlock(int hiddenSize, int intermediateSize, int numExperts, int topK, Rng rng,
        double initStd = 0.02, DType dtype = DType.Float32, Device? device = null)
    {
        if (topK <= 0 || topK > numExperts)
            throw new ArgumentException($"SparseMoeBlock: top-k {topK} must be in [1, {numExperts}] (the number of experts)");
        HiddenSize = hiddenSize;
        NumExperts = numExperts;
        TopK = topK;
        Gate = RegisterModule("gate", new Linear(hiddenSize, numExperts, rng, bias: false, initStd, dtype, device));
        Experts = RegisterModule("experts", new ModuleList<SwiGluMlp>(
            Enumerable.Range(0, numExperts).Select(_ => new SwiGluMlp(hiddenSize, intermediateSize, rng, initStd, dtype, device))));
    }

    /// <summary>Model width d.</summary>
    public int HiddenSize { get; }

    /// <summary>Number of experts E.</summary>
    public int NumExperts { get; }

    /// <summary>Experts per token k.</summary>
    public int TopK { get; }

    /// <summary>The router: weight [E, d].</summary>
    public Linear Gate { get; }

    /// <summary>The experts, "experts.0" … "experts.{E-1}".</summary>
    public ModuleList<SwiGluMlp> Experts { get; }

    /// <summary>
    /// The router logits [T, E] of the last <see cref="Forward"/> (for auxiliary load-balancing losses and
    /// routing statistics); null before the first call.
    /// </summary>
    public Tensor? LastRouterLogits { get; private set; }

    /// <summary>Mixtral's plain routing has no regulariser.</summary>
    public Tensor? LastRegularizationLoss => null;

    /// <summary>x [B, S, d] (or [T, d]) → same shape.</summary>
    public Tensor Forward(Tensor x)
    {
        if (x.Shape[-1] != HiddenSize)
            throw new ArgumentException($"SparseMoeBlock: input {x.Shape} needs last dimension {HiddenSize}");
        var inputShape = x.Shape.ToArray();
        int tokens = x.Numel / HiddenSize;
        var flat = x.Reshape(tokens, HiddenSize);

        // Routing: probabilities over all experts, keep the k largest, renormalise them to sum to one. Our
        // float types are float32 or float64, so the softmax is already at least float32 as in Hugging Face.
        var routerLogits = Gate.Forward(flat);                          // [T, E]
        LastRouterLogits = routerLogits;
        var probs = routerLogits.Softmax(-1);
        var (topWeights, topIndices) = probs.TopK(TopK);                // [T, k] each
        topWeights = topWeights.Div(topWeights.Sum(-1, keepDim: true));
        var flatWeights = topWeights.Reshape(tokens * TopK);            // entry t·k + slot

        // Which tokens (and which of their k slots) each expert serves, read once on the host.
        long[] chosen = topIndices.ToArray<long>();
        var tokenLists = new List<long>[NumExperts];
        var slotLists = new List<long>[NumExperts];
        for (int e = 0; e < NumExperts; e++) { tokenLists[e] = []; slotLists[e] = []; }
        for (int slot = 0; slot < chosen.Length; slot++)
        {
            int e = (int)chosen[slot];
            tokenLists[e].Add(slot / TopK);
            slotLists[e].Add(slot);
        }

        var output = Tensor.Zeros(new Shape(tokens, HiddenSize), x.DType, x.Device);
        for (int e = 0; e < NumExperts; e++)
        {
            int count = tokenLists[e].Count;
            if (count == 0) continue;   // an idle expert contributes nothing (and gets no gradient)
            var tokenIndex = Tensor.FromHost(tokenLists[e].ToArray(), [count], x.Device);
            var slotIndex = Tensor.FromHost(slotLists[e].ToArray(), [count], x.Device);
            var expertIn = flat.IndexSelect(0, tokenIndex);                         // [n, d]
            var expertOut = Experts[e].Forward(expertIn);                           // [n, d]
            var weight = flatWeights.IndexSelect(0, slotIndex).Reshape(count, 1);   // [n, 1]
            output = output.IndexAdd(0, tokenIndex, expertOut.Mul(weight));
        }
        return output.Reshape(inputShape);
    }
}
