namespace PureMoE.Moe.Parallel;

/// <summary>
/// The all-to-all of expert parallelism over a <see cref="DeviceGroup"/> (ROUTERS.md §5): counts first
/// (<see cref="ExchangeSizes"/>), then the payload (<see cref="Send"/>), which is differentiable: its backward sends
/// the gradient the reverse way (rank to → rank from) through the same group, counted in the step's
/// <see cref="ExchangeStats"/>. It also runs one task per rank with bounded waits (<see cref="RunOnRanks{T}"/>,
/// <see cref="WaitAll"/>): a failure on a rank surfaces as a <see cref="DeviceFailureException"/> naming it, a wait
/// that exceeds <see cref="Timeout"/> as an <see cref="ExchangeTimeoutException"/>, a cancelled token as an
/// <see cref="OperationCanceledException"/>; nothing waits unbounded.
/// </summary>
public sealed class TokenExchange
{
    /// <summary>An exchange over <paramref name="group"/> whose waits are bounded by <paramref name="timeout"/> (default 60 s).</summary>
    public TokenExchange(DeviceGroup group, TimeSpan? timeout = null)
    {
        Group = group ?? throw new ArgumentNullException(nameof(group));
        Timeout = timeout ?? TimeSpan.FromSeconds(60);
        if (Timeout <= TimeSpan.Zero) throw new ArgumentException($"TokenExchange: timeout {Timeout} must be positive", nameof(timeout));
    }

    /// <summary>The ranks.</summary>
    public DeviceGroup Group { get; }

    /// <summary>The bound on every wait of a step's phase.</summary>
    public TimeSpan Timeout { get; set; }

    /// <summary>
    /// True (the default): <see cref="RunOnRanks{T}"/> starts one task per rank. False: it runs the ranks one after
    /// another on the calling thread, in rank order — for debugging, and as the reference a concurrent step must equal
    /// bit for bit (every rank's work is deterministic and cross-rank sums go in rank order, so the two agree).
    /// Without concurrency a hung rank blocks the caller: <see cref="Timeout"/> cannot interrupt it.
    /// </summary>
    public bool Concurrent { get; set; } = true;

    /// <summary>
    /// The size exchange: rank s announces <paramref name="sendCounts"/>[s][q] rows for rank q; returns, per receiver q,
    /// the rows it will receive from each sender s (the transpose), so receivers allocate before the payload moves.
    /// </summary>
    public static int[][] ExchangeSizes(IReadOnlyList<int[]> sendCounts)
    {
        int p = sendCounts.Count;
        var receive = new int[p][];
        for (int q = 0; q < p; q++)
        {
            receive[q] = new int[p];
            for (int s = 0; s < p; s++)
            {
                if (sendCounts[s].Length != p) throw new ArgumentException($"TokenExchange: rank {s} announced {sendCounts[s].Length} counts for {p} ranks");
                if (sendCounts[s][q] < 0) throw new ArgumentException($"TokenExchange: rank {s} announced {sendCounts[s][q]} rows for rank {q}");
                receive[q][s] = sendCounts[s][q];
            }
        }
        return receive;
    }

    /// <summary>
    /// Sends <paramref name="payload"/> (rows on rank <paramref name="from"/>) to rank <paramref name="to"/>: a copy the
    /// receiver owns. Differentiable; the backward copies the gradient back to the sender (counted as backward payload, or as metadata). Counted in
    /// <paramref name="stats"/> as payload of <paramref name="direction"/>, or as metadata when
    /// <paramref name="metadata"/>. From a rank to itself it returns the payload unchanged (nothing moves).
    /// </summary>
    public Tensor Send(Tensor payload, int from, int to, ExchangeStats stats, ExchangeDirection direction, bool metadata = false,
        CancellationToken cancellation = default)
    {
        if (from == to) return payload;
        cancellation.ThrowIfCancellationRequested();
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        var moved = Group.Copy(payload, from, to);
        stats.RecordCopyTime(System.Diagnostics.Stopwatch.GetElapsedTime(start));
        stats.RecordPath(from, to, Group.LinkBetween(from, to));
        long bytes = (long)payload.Numel * payload.DType.SizeInBytes();
        if (metadata) stats.RecordMetadata(bytes);
        else stats.RecordPayload(direction, from, to, bytes);
        var group = Group;
        return Tensor.Function($"TokenExchange.{direction}", moved, [payload], g =>
        {
            var back = group.Copy(g, to, from);
            stats.RecordPath(to, from, group.LinkBetween(to, from));
            long gradBytes = (long)g.Numel * g.DType.SizeInBytes();
            if (metadata) stats.RecordMetadata(gradBytes);
            else stats.RecordPayload(ExchangeDirection.Backward, to, from, gradBytes);
            return [back];
        });
    }

    /// <summary>
    /// Starts one task per rank running <paramref name="work"/>(rank). An exception escapes as a
    /// <see cref="DeviceFailureException"/> naming the rank and <paramref name="phase"/> (one already naming a rank —
    /// propagated from a rank this one waited on — is kept as it is). Gradient recording is per thread: the work
    /// enters the caller's mode itself with <see cref="GradScope"/> around each synchronous stretch (never across an
    /// await, which may resume on another thread).
    /// </summary>
    public Task<T>[] RunOnRanks<T>(string phase, Func<int, Task<T>> work, CancellationToken cancellation = default)
    {
        async Task<T> Guarded(int rank)
        {
            try
            {
                cancellation.ThrowIfCancellationRequested();
                return await work(rank).ConfigureAwait(false);
            }
            catch (DeviceFailureException) { throw; }
            catch (OperationCanceledException) when (cancellation.IsCancellationRequested) { throw; }
            catch (Exception e) { throw new DeviceFailureException(rank, Group.NameOf(rank), phase, e); }
        }

        // Sequential: each rank runs to completion here (what it awaits belongs to an earlier phase, already done).
        if (!Concurrent) return Enumerable.Range(0, Group.Count).Select(Guarded).ToArray();
        return Enumerable.Range(0, Group.Count).Select(rank => Task.Run(() => Guarded(rank), CancellationToken.None)).ToArray();
    }

    /// <summary>A scope that turns recording off on this thread when <paramref name="record"/> is false (else null).</summary>
    public static IDisposable? GradScope(bool record) => record ? null : Tensor.NoGrad();

    /// <summary>
    /// Waits for every task (task i belongs to rank i) within <see cref="Timeout"/>. Throws the lowest-ranked
    /// <see cref="DeviceFailureException"/> if any task failed, an <see cref="ExchangeTimeoutException"/> naming the
    /// unfinished ranks if the bound passed, or an <see cref="OperationCanceledException"/> if the token was cancelled.
    /// </summary>
    public void WaitAll(IReadOnlyList<Task> tasks, string phase, CancellationToken cancellation = default)
    {
        bool finished;
        try
        {
            finished = Task.WaitAll(tasks.ToArray(), (int)Math.Min(int.MaxValue, Timeout.TotalMilliseconds), cancellation);
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            throw new OperationCanceledException($"Token exchange cancelled during {phase} (devices still busy: {string.Join(", ", Pending(tasks))}); the step produced no output", cancellation);
        }
        catch (AggregateException)
        {
            finished = true;
        }
        var failure = tasks.Select(t => t.Exception?.InnerExceptions.OfType<DeviceFailureException>().FirstOrDefault())
            .Where(e => e is not null).OrderBy(e => e!.Rank).FirstOrDefault();
        if (failure is not null) throw failure;
        if (cancellation.IsCancellationRequested || tasks.Any(t => t.IsCanceled))
            throw new OperationCanceledException($"Token exchange cancelled during {phase}; the step produced no output", cancellation);
        if (!finished) throw new ExchangeTimeoutException(Timeout, Pending(tasks), phase);
        var other = tasks.FirstOrDefault(t => t.IsFaulted);
        if (other is not null) throw other.Exception!.InnerException!;
    }

    private static int[] Pending(IReadOnlyList<Task> tasks) =>
        Enumerable.Range(0, tasks.Count).Where(i => !tasks[i].IsCompleted).ToArray();
}
