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

    /// <summary>
    /// int64 [T, m]: the permuted row that holds each pair t·m + j, or −1 for a pair that is not kept (the inverse
    /// of <see cref="RowPair"/>; the combine reads it).
    /// </summary>
    public Tensor PairRow { get; private set; } = null!;

    /// <summary>Builds the layout of <paramref name="plan"/> on <paramref name="device"/>.</summary>
    public static DispatchLayout Build(RoutingPlan plan, Device device)
    {
        int m = plan.SlotsPerToken, pairs = plan.Tokens * m, experts = plan.Experts;
        if (plan.PadToCapacity) return BuildPadded(plan, device);

        // A counting sort of the kept pairs by expert: stable (token order within an expert), O(pairs), on the host
        // where the plan's arrays already are; the same order as a stable argsort of the expert ids.
        var groupSizes = new int[experts];
        for (int i = 0; i < pairs; i++)
            if (plan.IsKept(i)) groupSizes[plan.Expert[i]]++;
        var next = new int[experts];
        for (int e = 1; e < experts; e++) next[e] = next[e - 1] + groupSizes[e - 1];
        int rows = experts == 0 ? 0 : next[experts - 1] + groupSizes[experts - 1];
        var rowToken = new long[rows];
        var rowPair = new long[rows];
        var pairRow = new long[pairs];
        for (int i = 0; i < pairs; i++)
        {
            if (!plan.IsKept(i)) { pairRow[i] = -1; continue; }
            int r = next[plan.Expert[i]]++;
            rowToken[r] = i / m;
            rowPair[r] = i;
            pairRow[i] = r;
        }
        return new DispatchLayout(Tensor.FromHost(rowToken, [rows], device), Tensor.FromHost(rowPair, [rows], device), groupSizes, padded: false)
        {
            PairRow = Tensor.FromHost(pairRow, [plan.Tokens, m], device),
        };
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
        var pairRow = new long[plan.Tokens * m];
        Array.Fill(pairRow, -1L);
        for (int r = 0; r < pairsList.Count; r++)
            if (pairsList[r] < pairRow.Length) pairRow[pairsList[r]] = r;
        return new DispatchLayout(Tensor.FromHost(tokens.ToArray(), [tokens.Count], device),
            Tensor.FromHost(pairsList.ToArray(), [pairsList.Count], device), sizes, padded: true)
        {
            PairRow = Tensor.FromHost(pairRow, [plan.Tokens, m], device),
        };
    }

    /// <summary>
    /// Gathers the permuted rows [N, d] from x [T, d] (differentiable). The backward uses the inverse map: token t's
    /// gradient is the sum of its own rows' gradients, rows <see cref="PairRow"/>[t, j] in slot order — one
    /// gather-sum (the combine's kernel with unit weights) instead of an index-add that scatters N rows into T, which
    /// on a GPU must sort the rows first to add them in a fixed order.
    /// </summary>
    public Tensor Gather(Tensor x)
    {
        if (x.Rank != 2) throw new ArgumentException($"DispatchLayout.Gather: x must be [T, d], got {x.Shape}");
        int tokens = x.Shape[0], d = x.Shape[1], m = PairRow.Shape[1];
        if (tokens != PairRow.Shape[0])
            throw new ArgumentException($"DispatchLayout.Gather: x {x.Shape} has {tokens} tokens, the layout {PairRow.Shape[0]}");
        Tensor rows;
        using (Autograd.GradMode.NoGrad())
        {
            var source = Padded ? Tensor.Concat([x, Tensor.Zeros(new Shape(1, d), x.DType, x.Device)], 0) : x;
            rows = source.IndexSelect(0, RowToken);
        }
        return Tensor.Function("DispatchGather", rows, [x], g =>
        {
            var ones = Tensor.Ones(new Shape(tokens, m), g.DType, g.Device);
            return [Tensor.WeightedGatherSum(g, PairRow, ones)];
        });
    }

    /// <summary>
    /// The combine: out[t] = Σ over rows r of token t of w[pair(r)] · y[r] (in slot order), as one fused
    /// gather-weighted-sum over <see cref="PairRow"/> into [T, d] (differentiable in y and in the weights).
    /// </summary>
    public Tensor Combine(Tensor y, Tensor weights, int tokens)
    {
        int m = PairRow.Shape[1];
        if (tokens != PairRow.Shape[0] || weights.Numel != tokens * m)
            throw new ArgumentException($"Combine: weights {weights.Shape} and {tokens} tokens do not match the layout's pairs {PairRow.Shape}");
        return Tensor.WeightedGatherSum(y, PairRow, weights.Reshape(tokens, m));
    }
}
