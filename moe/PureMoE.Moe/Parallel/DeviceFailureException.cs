namespace PureMoE.Moe.Parallel;

/// <summary>
/// An exception on one rank of a <see cref="DeviceGroup"/> (an expert throwing, a copy failing), surfaced on the
/// caller with the rank and the phase of the exchange named. The original exception is the inner exception.
/// </summary>
public sealed class DeviceFailureException : Exception
{
    /// <summary>Creates the exception for <paramref name="rank"/> failing in <paramref name="phase"/>.</summary>
    public DeviceFailureException(int rank, string device, string phase, Exception inner)
        : base($"Device {rank} ({device}) failed during {phase}: {inner.GetType().Name}: {inner.Message}", inner)
    {
        Rank = rank;
        Device = device;
        Phase = phase;
    }

    /// <summary>The rank that failed.</summary>
    public int Rank { get; }

    /// <summary>The rank's device name.</summary>
    public string Device { get; }

    /// <summary>What the rank was doing ("route", "dispatch", "experts", "combine").</summary>
    public string Phase { get; }
}

/// <summary>An exchange step did not finish within its bounded wait; names the ranks still busy.</summary>
public sealed class ExchangeTimeoutException : TimeoutException
{
    /// <summary>Creates the exception.</summary>
    public ExchangeTimeoutException(TimeSpan timeout, IReadOnlyList<int> pendingRanks, string phase)
        : base($"Token exchange timed out after {timeout.TotalSeconds:0.###} s in {phase}: device(s) {string.Join(", ", pendingRanks)} did not finish")
    {
        Timeout = timeout;
        PendingRanks = pendingRanks;
        Phase = phase;
    }

    /// <summary>The bound that was exceeded.</summary>
    public TimeSpan Timeout { get; }

    /// <summary>Ranks that had not finished.</summary>
    public IReadOnlyList<int> PendingRanks { get; }

    /// <summary>The phase waited on.</summary>
    public string Phase { get; }
}
