using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Dispatch;

/// <summary>
/// The expert-major order of a plan's kept pairs, MegaBlocks-style: pairs stably sorted by expert (ties keep
/// token order), counts per expert, and for every permuted row the token it reads and the pair whose weight
/// scales it. With padding to capacity, each expert's group is exactly C rows and missing rows read the zero
/// row (index T) with the zero weight (index T·m).
/// </summary>
public sealed class DispatchLayout
{
    private DispatchLayout(Tensor rowToken, Tensor rowPair, int[] groupSizes, bool padded)
    {
        RowToken = rowToken;
        RowPair = rowPair;
        GroupSizes = groupSizes;
        Padded = padded;
    }

    /// <summary>int64 [N]: the token (row of x) each permuted row reads; T for a padding row.</summary>
    public Tensor RowToken { get; }

    /// <summary>int64 [N]: the flat pair index t·m + j whose weight scales each row; T·m for a padding row.</summary>
    public Tensor RowPair { get; }

    /// <summary>Rows per expert, in expert order (sums to N).</summary>
    public int[] GroupSizes { get; }

    /// <summary>True when groups are padded to capacity (rows reading the zero row exist).</summary>
    public bool Padded { get; }

    /// <summary>Number of permuted rows N.</summary>
    public int Rows => RowToken.Numel;

    /// <summary>Builds the layout of <paramref name="plan"/> on <paramref name="device"/>.</summary>
    public static DispatchLayout Build(RoutingPlan plan, Device device)
    {
        int m = plan.SlotsPerToken, pairs = plan.Tokens * m, experts = plan.Experts;
        if (plan.PadToCapacity) return BuildPadded(plan, device);

        // Sort key of each pair: its expert if kept, else E (sorts after every expert, then cut off).
        var keys = new long[pairs];
        var tokenOfPair = new long[pairs];
        for (int i = 0; i < pairs; i++)
        {
            keys[i] = plan.IsKept(i) ? plan.Expert[i] : experts;
            tokenOfPair[i] = i / m;
        }
        var keyTensor = Tensor.FromHost(keys, [pairs], device);
        var order = keyTensor.ArgSort();                                   // stable: token order within an expert

        // Counts per expert (a histogram over the keys): the one host read the sizes need.
        var counts = Tensor.Zeros(new Shape(experts + 1), DType.Int64, device)
            .ScatterAdd(0, keyTensor, Tensor.Ones(new Shape(pairs), DType.Int64, device)).ToArray<long>();
        var groupSizes = counts[..experts].Select(c => (int)c).ToArray();
        int rows = groupSizes.Sum();

        var rowPair = order.Narrow(0, 0, rows).Contiguous();
        var rowToken = Tensor.FromHost(tokenOfPair, [pairs], device).IndexSelect(0, rowPair);
        return new DispatchLayout(rowToken, rowPair, groupSizes, padded: false);
    }

    // Padded (GShard) layout: expert e's rows are [e·C, (e+1)·C); a kept pair goes to row e·C + its slot.
    // Rectified pairs (outside capacity) are appended after the padded groups, one group per expert.
    private static DispatchLayout BuildPadded(RoutingPlan plan, Device device)
    {
        int m = plan.SlotsPerToken, c = plan.Capacity!.Value, experts = plan.Experts;
        var extra = new List<int>[experts];
        for (int e = 0; e < experts; e++) extra[e] = [];
        var rowToken = new long[experts * c];
        var rowPair = new long[experts * c];
        Array.Fill(rowToken, plan.Tokens);
        Array.Fill(rowPair, (long)plan.Tokens * m);
        for (int i = 0; i < plan.Expert.Length; i++)
        {
            if (!plan.IsKept(i)) continue;
            int e = plan.Expert[i];
            if (plan.Kind[i] == PairKind.Rectified) { extra[e].Add(i); continue; }
            rowToken[e * c + plan.Slot[i]] = i / m;
            rowPair[e * c + plan.Slot[i]] = i;
        }
        // Each expert's group: its C padded rows followed by its rectified rows.
        var tokens = new List<long>();
        var pairsList = new List<long>();
        var sizes = new int[experts];
        for (int e = 0; e < experts; e++)
        {
            for (int s = 0; s < c; s++) { tokens.Add(rowToken[e * c + s]); pairsList.Add(rowPair[e * c + s]); }
            foreach (int i in extra[e]) { tokens.Add(i / m); pairsList.Add(i); }
            sizes[e] = c + extra[e].Count;
        }
        return new DispatchLayout(Tensor.FromHost(tokens.ToArray(), [tokens.Count], device),
            Tensor.FromHost(pairsList.ToArray(), [pairsList.Count], device), sizes, padded: true);
    }

    /// <summary>Gathers the permuted rows [N, d] from x [T, d] (differentiable).</summary>
    public Tensor Gather(Tensor x)
    {
        var source = Padded ? Tensor.Concat([x, Tensor.Zeros(new Shape(1, x.Shape[1]), x.DType, x.Device)], 0) : x;
        return source.IndexSelect(0, RowToken);
    }

    /// <summary>
    /// The combine: out[t] = Σ over rows r of token t of w[pair(r)] · y[r], as an index-add into [T, d]
    /// (differentiable in y and in the weights).
    /// </summary>
    public Tensor Combine(Tensor y, Tensor weights, int tokens)
    {
        var flatWeights = weights.Reshape(weights.Numel);
        if (Padded) flatWeights = Tensor.Concat([flatWeights, Tensor.Zeros(new Shape(1), weights.DType, weights.Device)], 0);
        var rowWeights = flatWeights.IndexSelect(0, RowPair).Unsqueeze(1);                 // [N, 1]
        int outRows = Padded ? tokens + 1 : tokens;
        var output = Tensor.Zeros(new Shape(outRows, y.Shape[1]), y.DType, y.Device).IndexAdd(0, RowToken, y.Mul(rowWeights));
        return Padded ? output.Narrow(0, 0, tokens) : output;
    }
}
