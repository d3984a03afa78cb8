namespace PureMoE.Moe.Parallel;

/// <summary>How the ranks of a <see cref="DeviceGroup"/> reach each other's memory.</summary>
public enum RankLink
{
    /// <summary>The same rank: no copy.</summary>
    Self,
    /// <summary>Both ranks live in host memory: one host-to-host copy into the receiver's own buffer.</summary>
    Host,
    /// <summary>A direct device-to-device copy (GPUs with peer access). Extension point: not produced yet.</summary>
    Peer,
    /// <summary>Through host memory: device → host → device (GPUs without peer access).</summary>
    HostStaged,
}

/// <summary>
/// P ranks (expert-parallel devices), each with its own memory: a tensor belongs to one rank, and moving it to another
/// rank is an explicit copy into a buffer that rank owns (<see cref="Copy"/>). Today a group is P logical devices on
/// the CPU (<see cref="LogicalCpu"/>): every rank has separate buffers on the host device, so the whole expert-parallel
/// path runs and is tested without GPUs.
/// <para>
/// Extension point for GPUs: <see cref="FromDevices"/> accepts any engine devices. When the ILGPU backend lands,
/// a group of P CUDA devices needs two things here: (1) <see cref="LinkBetween"/> returns <see cref="RankLink.Peer"/>
/// where ILGPU's <c>CanAccessPeer</c> says so (and peer access is enabled once, when the group is built), and
/// (2) <see cref="Copy"/> issues the peer copy on the sender's stream for that link. Until then non-host pairs use
/// <see cref="RankLink.HostStaged"/>, which goes through the engine's own <c>Tensor.To(Device)</c> via the host.
/// </para>
/// </summary>
public sealed class DeviceGroup
{
    private readonly Device[] _devices;
    private readonly string[] _names;

    private DeviceGroup(Device[] devices, string[] names)
    {
        _devices = devices;
        _names = names;
    }

    /// <summary>P logical devices on the CPU (each rank's tensors are its own copies on <paramref name="backing"/>, default <see cref="Device.Cpu"/>).</summary>
    public static DeviceGroup LogicalCpu(int devices, Device? backing = null)
    {
        if (devices < 1) throw new ArgumentException($"DeviceGroup: needs at least one device, got {devices}", nameof(devices));
        var device = backing ?? Device.Cpu;
        if (!device.IsHost) throw new ArgumentException($"DeviceGroup.LogicalCpu: the backing device {device} is not a host device", nameof(backing));
        return new DeviceGroup(Enumerable.Repeat(device, devices).ToArray(),
            Enumerable.Range(0, devices).Select(r => $"logical-cpu:{r}").ToArray());
    }

    /// <summary>
    /// One rank per engine device, in order. Host devices may repeat (logical ranks); any other device may appear once.
    /// Copies between distinct non-host devices are staged through the host (see the class remarks).
    /// </summary>
    public static DeviceGroup FromDevices(IReadOnlyList<Device> devices)
    {
        if (devices.Count < 1) throw new ArgumentException("DeviceGroup: needs at least one device", nameof(devices));
        var seen = new HashSet<Device>();
        foreach (var d in devices)
            if (!d.IsHost && !seen.Add(d)) throw new ArgumentException($"DeviceGroup: device {d} appears twice; only host devices can back several ranks", nameof(devices));
        return new DeviceGroup(devices.ToArray(), devices.Select((d, r) => d.IsHost ? $"logical-cpu:{r}" : $"{d}").ToArray());
    }

    /// <summary>Number of ranks P.</summary>
    public int Count => _devices.Length;

    /// <summary>The engine device rank <paramref name="rank"/>'s tensors live on.</summary>
    public Device DeviceOf(int rank) => _devices[CheckRank(rank)];

    /// <summary>A readable name of the rank ("logical-cpu:2").</summary>
    public string NameOf(int rank) => _names[CheckRank(rank)];

    /// <summary>How <paramref name="from"/> reaches <paramref name="to"/>.</summary>
    public RankLink LinkBetween(int from, int to)
    {
        if (CheckRank(from) == CheckRank(to)) return RankLink.Self;
        if (_devices[from].IsHost && _devices[to].IsHost) return RankLink.Host;
        // Extension point: RankLink.Peer where the accelerators can access each other's memory.
        return RankLink.HostStaged;
    }

    /// <summary>
    /// Copies <paramref name="source"/> (a tensor of rank <paramref name="from"/>) into a new contiguous buffer owned by
    /// rank <paramref name="to"/>. Not recorded for autograd (the exchange records its own backward). A copy to the
    /// same rank still copies.
    /// </summary>
    public Tensor Copy(Tensor source, int from, int to)
    {
        var link = LinkBetween(from, to);
        CopyFault?.Invoke(from, to);
        using var _ = Tensor.NoGrad();
        var detached = source.Detach();
        if (link == RankLink.HostStaged) return detached.To(Device.Cpu).To(_devices[to]);   // device → host → device
        // Self / Host: a fresh buffer for the receiver (To copies between different host devices; Clone on the same one).
        return detached.Device.Equals(_devices[to]) ? detached.Clone() : detached.To(_devices[to]);
    }

    /// <summary>
    /// Sums one tensor per rank (same shape) and returns the sum as one copy per rank (explicit copies to rank 0, a sum
    /// there in rank order — deterministic, so every rank gets bit-identical values — and copies back).
    /// </summary>
    public Tensor[] AllReduceSum(IReadOnlyList<Tensor> perRank)
    {
        if (perRank.Count != Count) throw new ArgumentException($"DeviceGroup.AllReduceSum: {perRank.Count} tensors for {Count} ranks");
        using var _ = Tensor.NoGrad();
        var total = Copy(perRank[0], 0, 0);
        for (int r = 1; r < Count; r++)
        {
            if (perRank[r].Shape != total.Shape)
                throw new ArgumentException($"DeviceGroup.AllReduceSum: rank {r} has shape {perRank[r].Shape}, rank 0 {total.Shape}");
            total = total.Add(Copy(perRank[r], r, 0));
        }
        return Enumerable.Range(0, Count).Select(r => Copy(total, 0, r)).ToArray();
    }

    /// <summary>Test hook: called before every copy with (from, to); throwing simulates a failed copy.</summary>
    internal Action<int, int>? CopyFault { get; set; }

    /// <summary>"4 ranks: logical-cpu:0, …".</summary>
    public override string ToString() => $"{Count} rank(s): {string.Join(", ", _names)}";

    private int CheckRank(int rank) =>
        rank >= 0 && rank < Count ? rank : throw new ArgumentOutOfRangeException(nameof(rank), $"DeviceGroup: rank {rank} is outside [0, {Count})");
}
