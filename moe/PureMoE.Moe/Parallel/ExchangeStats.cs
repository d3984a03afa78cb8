using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Parallel;

/// <summary>
/// What one expert-parallel step moved between P ranks (ROUTERS.md §5). Payload bytes count token activations only:
/// dispatch sends each token once to each distinct other device holding one of its kept experts, combine returns one
/// vector per (token, device), so each way moves Σ_t |devices(t) \ {source(t)}| · d · bytes-per-element
/// (<see cref="FormulaBytes"/>). Routing metadata (local expert ids, int32, and gate weights, per sent token) is counted
/// apart in <see cref="MetadataBytes"/>. Gradients of the reverse exchange are added when backward runs. Each ordered
/// pair of ranks also records the path its copies took (<see cref="PathOf"/>: peer-to-peer or staged through the host).
/// </summary>
public sealed class ExchangeStats
{
    private readonly long[] _dispatchSent, _dispatchReceived, _combineSent, _combineReceived;
    private readonly long[] _backwardSent, _backwardReceived;
    private readonly long[] _tokensSent, _tokensReceived, _rows, _matrix;
    private readonly int[] _paths;             // s·P + q: bit (1 << link) for each link a copy s → q used
    private long _messages, _metadata, _backwardMessages, _copyTicks;

    /// <summary>Empty statistics for <paramref name="devices"/> ranks, width d and element size.</summary>
    public ExchangeStats(int devices, int hiddenSize, int bytesPerElement)
    {
        Devices = devices;
        HiddenSize = hiddenSize;
        BytesPerElement = bytesPerElement;
        _dispatchSent = new long[devices]; _dispatchReceived = new long[devices];
        _combineSent = new long[devices]; _combineReceived = new long[devices];
        _backwardSent = new long[devices]; _backwardReceived = new long[devices];
        _tokensSent = new long[devices]; _tokensReceived = new long[devices];
        _rows = new long[devices];
        _matrix = new long[devices * devices];
        _paths = new int[devices * devices];
    }

    /// <summary>Ranks P.</summary>
    public int Devices { get; }
    /// <summary>Model width d.</summary>
    public int HiddenSize { get; }
    /// <summary>Bytes per activation element.</summary>
    public int BytesPerElement { get; }

    /// <summary>Dispatch payload bytes each rank sent to other ranks.</summary>
    public IReadOnlyList<long> DispatchBytesSent => _dispatchSent;
    /// <summary>Dispatch payload bytes each rank received from other ranks.</summary>
    public IReadOnlyList<long> DispatchBytesReceived => _dispatchReceived;
    /// <summary>Combine payload bytes each rank sent back (one vector per token it computed for another rank).</summary>
    public IReadOnlyList<long> CombineBytesSent => _combineSent;
    /// <summary>Combine payload bytes each rank received (its tokens' partial outputs from other ranks).</summary>
    public IReadOnlyList<long> CombineBytesReceived => _combineReceived;
    /// <summary>Gradient bytes each rank sent in the reverse exchange (backward of dispatch and combine).</summary>
    public IReadOnlyList<long> BackwardBytesSent => _backwardSent;
    /// <summary>Gradient bytes each rank received in the reverse exchange.</summary>
    public IReadOnlyList<long> BackwardBytesReceived => _backwardReceived;
    /// <summary>Token vectors each rank dispatched to other ranks.</summary>
    public IReadOnlyList<long> TokensSent => _tokensSent;
    /// <summary>Token vectors each rank received from other ranks.</summary>
    public IReadOnlyList<long> TokensReceived => _tokensReceived;
    /// <summary>Expert rows (kept pairs) each rank computed: its load.</summary>
    public IReadOnlyList<long> RowsComputed => _rows;
    /// <summary>Token vectors dispatched from rank s to rank q, entry s·P + q (the diagonal: tokens kept local).</summary>
    public IReadOnlyList<long> TokenMatrix => _matrix;

    /// <summary>Forward payload messages between distinct ranks (non-empty dispatch and combine buffers).</summary>
    public long Messages => Interlocked.Read(ref _messages);
    /// <summary>Size messages of the forward (every rank tells every other rank its counts first): 2·P·(P − 1).</summary>
    public long SizeMessages => 2L * Devices * (Devices - 1);
    /// <summary>Messages of the reverse exchange.</summary>
    public long BackwardMessages => Interlocked.Read(ref _backwardMessages);
    /// <summary>Routing metadata bytes sent with the dispatch (expert ids and gate weights).</summary>
    public long MetadataBytes => Interlocked.Read(ref _metadata);

    /// <summary>Dispatch payload bytes of the step (one way): Σ over ranks of <see cref="DispatchBytesSent"/>.</summary>
    public long DispatchBytes => _dispatchSent.Sum();
    /// <summary>Combine payload bytes of the step (the other way).</summary>
    public long CombineBytes => _combineSent.Sum();
    /// <summary>Gradient bytes of the reverse exchange.</summary>
    public long BackwardBytes => _backwardSent.Sum();

    /// <summary>Max / mean of <see cref="RowsComputed"/> over ranks (1 = balanced; 1 when nothing was computed).</summary>
    public double LoadImbalance => Imbalance(_rows);
    /// <summary>Max / mean of <see cref="TokensReceived"/> over ranks.</summary>
    public double ReceiveImbalance => Imbalance(_tokensReceived);

    /// <summary>Time spent in forward copies between ranks, summed over the copies (they may overlap in wall time).</summary>
    public TimeSpan CopyTime => TimeSpan.FromTicks(Interlocked.Read(ref _copyTicks));

    /// <summary>
    /// The path the copies from rank <paramref name="from"/> to rank <paramref name="to"/> took (forward and backward),
    /// or null when nothing moved between them. A group fixes one link per pair, so there is one path.
    /// </summary>
    public RankLink? PathOf(int from, int to)
    {
        int bits = Volatile.Read(ref _paths[from * Devices + to]);
        for (var link = RankLink.Self; link <= RankLink.HostStaged; link++)
            if ((bits & (1 << (int)link)) != 0) return link;
        return null;
    }

    /// <summary>Ordered pairs of distinct ranks whose copies went over <paramref name="link"/>.</summary>
    public int PairsOver(RankLink link) =>
        Enumerable.Range(0, Devices * Devices).Count(i => i / Devices != i % Devices && (Volatile.Read(ref _paths[i]) & (1 << (int)link)) != 0);

    /// <summary>Wall time of the forward exchange step.</summary>
    public TimeSpan Elapsed { get; internal set; }

    /// <summary>
    /// ROUTERS.md §5: Σ_t |devices(t) \ {source(t)}| · d · bytes-per-element for the plans of P ranks (plan r's tokens
    /// come from rank r), where devices(t) are the devices holding t's kept experts.
    /// </summary>
    public static long FormulaBytes(IReadOnlyList<RoutingPlan> plans, ExpertPlacement placement, int hiddenSize, int bytesPerElement)
    {
        long total = 0;
        var seen = new bool[placement.Devices];
        for (int r = 0; r < plans.Count; r++)
        {
            var plan = plans[r];
            int m = plan.SlotsPerToken;
            for (int t = 0; t < plan.Tokens; t++)
            {
                Array.Clear(seen);
                for (int j = 0; j < m; j++)
                {
                    int i = t * m + j;
                    if (!plan.IsKept(i)) continue;
                    int q = placement.DeviceOf(plan.Expert[i]);
                    if (q != r && !seen[q]) { seen[q] = true; total++; }
                }
            }
        }
        return total * hiddenSize * bytesPerElement;
    }

    /// <summary>Sums statistics of several steps (same P, d, element size).</summary>
    public static ExchangeStats Sum(IEnumerable<ExchangeStats> steps)
    {
        ExchangeStats? total = null;
        foreach (var s in steps)
        {
            total ??= new ExchangeStats(s.Devices, s.HiddenSize, s.BytesPerElement);
            if (s.Devices != total.Devices) throw new ArgumentException($"ExchangeStats.Sum: {s.Devices} devices vs {total.Devices}");
            void Add(long[] into, IReadOnlyList<long> from) { for (int i = 0; i < into.Length; i++) into[i] += from[i]; }
            Add(total._dispatchSent, s._dispatchSent); Add(total._dispatchReceived, s._dispatchReceived);
            Add(total._combineSent, s._combineSent); Add(total._combineReceived, s._combineReceived);
            Add(total._backwardSent, s._backwardSent); Add(total._backwardReceived, s._backwardReceived);
            Add(total._tokensSent, s._tokensSent); Add(total._tokensReceived, s._tokensReceived);
            Add(total._rows, s._rows); Add(total._matrix, s._matrix);
            for (int i = 0; i < total._paths.Length; i++) total._paths[i] |= s._paths[i];
            total._messages += s.Messages; total._metadata += s.MetadataBytes; total._backwardMessages += s.BackwardMessages;
            total.Elapsed += s.Elapsed; total._copyTicks += s._copyTicks;
        }
        return total ?? throw new ArgumentException("ExchangeStats.Sum: no steps");
    }

    /// <summary>One line: bytes each way, messages, imbalance.</summary>
    public override string ToString() =>
        $"P={Devices}: dispatch {DispatchBytes} B, combine {CombineBytes} B, backward {BackwardBytes} B, metadata {MetadataBytes} B, " +
        $"{Messages} messages (+{SizeMessages} size), load max/mean {LoadImbalance:0.###}, {Elapsed.TotalMilliseconds:0.###} ms";

    internal void RecordTokens(int from, int to, int tokens)
    {
        Interlocked.Add(ref _matrix[from * Devices + to], tokens);
        if (from == to || tokens == 0) return;
        Interlocked.Add(ref _tokensSent[from], tokens);
        Interlocked.Add(ref _tokensReceived[to], tokens);
    }

    internal void RecordPath(int from, int to, RankLink link) => Interlocked.Or(ref _paths[from * Devices + to], 1 << (int)link);

    internal void RecordRows(int rank, int rows) => Interlocked.Add(ref _rows[rank], rows);

    internal void RecordCopyTime(TimeSpan time) => Interlocked.Add(ref _copyTicks, time.Ticks);

    internal void RecordMetadata(long bytes) => Interlocked.Add(ref _metadata, bytes);

    internal void RecordPayload(ExchangeDirection direction, int from, int to, long bytes)
    {
        if (from == to || bytes == 0) return;
        switch (direction)
        {
            case ExchangeDirection.Dispatch:
                Interlocked.Add(ref _dispatchSent[from], bytes); Interlocked.Add(ref _dispatchReceived[to], bytes);
                Interlocked.Increment(ref _messages);
                break;
            case ExchangeDirection.Combine:
                Interlocked.Add(ref _combineSent[from], bytes); Interlocked.Add(ref _combineReceived[to], bytes);
                Interlocked.Increment(ref _messages);
                break;
            default:
                Interlocked.Add(ref _backwardSent[from], bytes); Interlocked.Add(ref _backwardReceived[to], bytes);
                Interlocked.Increment(ref _backwardMessages);
                break;
        }
    }

    private static double Imbalance(long[] values)
    {
        double mean = values.Average();
        return mean > 0 ? values.Max() / mean : 1.0;
    }
}

/// <summary>Which leg of the exchange a copy belongs to.</summary>
public enum ExchangeDirection
{
    /// <summary>Tokens from their source rank to the ranks of their experts.</summary>
    Dispatch,
    /// <summary>Combined partial outputs back to the source rank.</summary>
    Combine,
    /// <summary>Gradients of either leg, sent the reverse way.</summary>
    Backward,
}
