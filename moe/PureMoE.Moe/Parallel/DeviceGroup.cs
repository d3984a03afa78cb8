using PureMoE.Backends.Ilgpu;

namespace PureMoE.Moe.Parallel;

/// <summary>How the ranks of a <see cref="DeviceGroup"/> reach each other's memory.</summary>
public enum RankLink
{
    /// <summary>The same rank: no copy.</summary>
    Self,
    /// <summary>Both ranks live in host memory: one host-to-host copy into the receiver's own buffer.</summary>
    Host,
    /// <summary>A direct device-to-device copy between ILGPU devices with peer access (ILGPU's <c>CanAccessPeer</c>).</summary>
    Peer,
    /// <summary>Through host memory: device → host → device (devices without peer access, or peer access turned off).</summary>
    HostStaged,
}

/// <summary>
/// P ranks (expert-parallel devices), each with its own memory: a tensor belongs to one rank, and moving it to another
/// rank is an explicit copy into a buffer that rank owns (<see cref="Copy"/>), the only place data crosses devices.
/// A group is P logical devices on the CPU (<see cref="LogicalCpu"/>: separate buffers on the host), or P ILGPU
/// devices (<see cref="Ilgpu"/>, <see cref="Cuda"/>, <see cref="IlgpuCpu"/>): each rank's tensors live on its own
/// accelerator, pairs that ILGPU's <c>CanAccessPeer</c> allows get peer access enabled once, when the group is built,
/// and copy device to device (<see cref="RankLink.Peer"/>); other pairs stage through host memory
/// (<see cref="RankLink.HostStaged"/>). <see cref="LinkBetween"/> says which.
/// <para>
/// An ILGPU device takes work from one thread at a time, so the group serialises each such rank's work with a lock
/// (<see cref="Hold"/>); host devices are thread-safe and take none.
/// </para>
/// </summary>
public sealed class DeviceGroup
{
    private readonly Device[] _devices;
    private readonly string[] _names;
    private readonly RankLink[] _links;      // entry from·P + to
    private readonly object?[] _locks;       // per rank: its device's lock; null where the device is thread-safe (host)

    // One lock per ILGPU device for the process, so groups that share a device also take turns on it.
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<Device, object> s_deviceLocks = new();

    private DeviceGroup(Device[] devices, string[] names, bool peerAccess)
    {
        _devices = devices;
        _names = names;
        int p = devices.Length;
        _links = new RankLink[p * p];
        for (int a = 0; a < p; a++)
            for (int b = 0; b < p; b++)
                _links[a * p + b] = a == b ? RankLink.Self
                    : devices[a].IsHost && devices[b].IsHost ? RankLink.Host
                    : b > a ? LinkOf(devices[a], devices[b], peerAccess)
                    : _links[b * p + a];                                   // peer access is enabled both ways
        _locks = devices.Select(d => d.IsHost ? null : s_deviceLocks.GetOrAdd(d, _ => new object())).ToArray();
    }

    private static RankLink LinkOf(Device a, Device b, bool peerAccess) =>
        peerAccess && a.IsIlgpu && b.IsIlgpu && IlgpuDevices.EnablePeerAccess(a, b) ? RankLink.Peer : RankLink.HostStaged;

    /// <summary>P logical devices on the CPU (each rank's tensors are its own copies on <paramref name="backing"/>, default <see cref="Device.Cpu"/>).</summary>
    public static DeviceGroup LogicalCpu(int devices, Device? backing = null)
    {
        if (devices < 1) throw new ArgumentException($"DeviceGroup: needs at least one device, got {devices}", nameof(devices));
        var device = backing ?? Device.Cpu;
        if (!device.IsHost) throw new ArgumentException($"DeviceGroup.LogicalCpu: the backing device {device} is not a host device", nameof(backing));
        return new DeviceGroup(Enumerable.Repeat(device, devices).ToArray(),
            Enumerable.Range(0, devices).Select(r => $"logical-cpu:{r}").ToArray(), peerAccess: false);
    }

    /// <summary>
    /// One rank per engine device, in order. Host devices may repeat (logical ranks); any other device may appear once.
    /// ILGPU pairs with peer access copy directly, other pairs of distinct devices through the host.
    /// </summary>
    public static DeviceGroup FromDevices(IReadOnlyList<Device> devices)
    {
        ArgumentNullException.ThrowIfNull(devices);
        if (devices.Count < 1) throw new ArgumentException("DeviceGroup: needs at least one device", nameof(devices));
        var seen = new HashSet<Device>();
        foreach (var d in devices)
            if (!d.IsHost && !seen.Add(d)) throw new ArgumentException($"DeviceGroup: device {d} appears twice; only host devices can back several ranks", nameof(devices));
        return new DeviceGroup(devices.ToArray(), devices.Select((d, r) => d.IsHost ? $"logical-cpu:{r}" : $"{d}").ToArray(), peerAccess: true);
    }

    /// <summary>
    /// P distinct ILGPU devices (CUDA GPUs, OpenCL devices, ILGPU CPU accelerators), one per rank. With
    /// <paramref name="peerAccess"/> (the default) peer access is enabled between every pair whose accelerators
    /// <c>CanAccessPeer</c> each other and those pairs copy device to device; false stages every copy through the host.
    /// </summary>
    public static DeviceGroup Ilgpu(IReadOnlyList<Device> devices, bool peerAccess = true)
    {
        ArgumentNullException.ThrowIfNull(devices);
        if (devices.Count < 1) throw new ArgumentException("DeviceGroup.Ilgpu: needs at least one device", nameof(devices));
        foreach (var d in devices)
            if (!d.IsIlgpu) throw new ArgumentException($"DeviceGroup.Ilgpu: {d} is not an ILGPU device (CUDA, OpenCL or ILGPU CPU)", nameof(devices));
        if (devices.Distinct().Count() != devices.Count)
            throw new ArgumentException($"DeviceGroup.Ilgpu: every rank needs its own device, got [{string.Join(", ", devices)}]", nameof(devices));
        return new DeviceGroup(devices.ToArray(), devices.Select(d => d.ToString()).ToArray(), peerAccess);
    }

    /// <summary>
    /// CUDA GPUs 0 … P−1 (peer access where the GPUs allow it). Throws <see cref="InvalidOperationException"/> naming
    /// the GPUs found when the machine has fewer than <paramref name="devices"/>.
    /// </summary>
    public static DeviceGroup Cuda(int devices, bool peerAccess = true)
    {
        if (devices < 1) throw new ArgumentException($"DeviceGroup.Cuda: needs at least one device, got {devices}", nameof(devices));
        int found = IlgpuDevices.CudaCount;
        if (found < devices)
            throw new InvalidOperationException(
                $"DeviceGroup.Cuda({devices}): needs {devices} CUDA GPUs, this machine has {found} visible to ILGPU (ILGPU devices here: {IlgpuDevices.Describe()})");
        return Ilgpu(Enumerable.Range(0, devices).Select(i => Device.Cuda(i)).ToArray(), peerAccess);
    }

    /// <summary>
    /// P separate ILGPU CPU accelerators (<see cref="Device.IlgpuCpuAt"/> 0 … P−1): the GPU code path, emulated, on a
    /// machine without GPUs. ILGPU reports its CPU accelerators as peers (they share host memory), so they copy
    /// directly unless <paramref name="peerAccess"/> is false, which exercises the host-staged path instead.
    /// </summary>
    public static DeviceGroup IlgpuCpu(int devices, bool peerAccess = true)
    {
        if (devices < 1) throw new ArgumentException($"DeviceGroup.IlgpuCpu: needs at least one device, got {devices}", nameof(devices));
        return Ilgpu(Enumerable.Range(0, devices).Select(Device.IlgpuCpuAt).ToArray(), peerAccess);
    }

    /// <summary>
    /// P ranks of <paramref name="first"/>'s kind, starting at it: P logical ranks on a host device, and on an ILGPU
    /// kind the devices numbered first.Index … first.Index + P − 1 (e.g. cuda:0 … cuda:3), with peer access where
    /// they allow it. This is how a model on <paramref name="first"/> runs its MoE layers on P devices. Throws
    /// <see cref="InvalidOperationException"/> naming the devices there are when one of them does not exist.
    /// </summary>
    public static DeviceGroup Starting(Device first, int devices)
    {
        ArgumentNullException.ThrowIfNull(first);
        if (devices < 1) throw new ArgumentException($"DeviceGroup: needs at least one device, got {devices}", nameof(devices));
        if (first.IsHost) return LogicalCpu(devices, first);
        Func<int, Device> nth = first.Kind switch
        {
            DeviceKind.Cuda => Device.Cuda,
            DeviceKind.OpenCL => Device.OpenCL,
            DeviceKind.IlgpuCpu => Device.IlgpuCpuAt,
            DeviceKind.IlgpuWide => Device.IlgpuWideAt,
            _ => throw new ArgumentException($"DeviceGroup.Starting: no device group of kind {first.Kind}", nameof(first)),
        };
        var ranks = new Device[devices];
        for (int r = 0; r < devices; r++)
        {
            try { ranks[r] = nth(first.Index + r); }
            catch (InvalidOperationException e)
            {
                throw new InvalidOperationException($"DeviceGroup of {devices} devices from {first}: rank {r} has no device ({e.Message})", e);
            }
        }
        return Ilgpu(ranks);
    }

    /// <summary>Number of ranks P.</summary>
    public int Count => _devices.Length;

    /// <summary>The engine device rank <paramref name="rank"/>'s tensors live on.</summary>
    public Device DeviceOf(int rank) => _devices[CheckRank(rank)];

    /// <summary>A readable name of the rank ("logical-cpu:2", "cuda:1").</summary>
    public string NameOf(int rank) => _names[CheckRank(rank)];

    /// <summary>How <paramref name="from"/> reaches <paramref name="to"/>.</summary>
    public RankLink LinkBetween(int from, int to) => _links[CheckRank(from) * Count + CheckRank(to)];

    /// <summary>
    /// Copies <paramref name="source"/> (a tensor on rank <paramref name="from"/>'s device) into a new contiguous buffer
    /// owned by rank <paramref name="to"/>, over <see cref="LinkBetween"/>. Not recorded for autograd (the exchange
    /// records its own backward). A copy to the same rank still copies.
    /// </summary>
    public Tensor Copy(Tensor source, int from, int to)
    {
        ArgumentNullException.ThrowIfNull(source);
        var link = LinkBetween(from, to);
        if (!source.Device.Equals(_devices[from]))
            throw new ArgumentException($"DeviceGroup.Copy: the tensor is on {source.Device}, rank {from} on {_devices[from]}");
        CopyFault?.Invoke(from, to);
        using var _ = Tensor.NoGrad();
        using var hold = Hold(from, to);
        var detached = source.Detach();
        return link switch
        {
            RankLink.Peer => IlgpuDevices.PeerCopy(detached, _devices[to]),
            RankLink.HostStaged => detached.To(Device.Cpu).To(_devices[to]),                      // device → host → device
            _ => detached.Device.Equals(_devices[to]) ? detached.Clone() : detached.To(_devices[to]),  // Self, Host
        };
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
            var part = Copy(perRank[r], r, 0);
            using (Hold(0)) total = total.Add(part);
        }
        return Enumerable.Range(0, Count).Select(r => Copy(total, 0, r)).ToArray();
    }

    /// <summary>
    /// A copy of <paramref name="tensor"/> (on any device: a model's weights, a batch) on rank <paramref name="to"/>'s
    /// device, through the host where the devices differ. For loading and unloading ranks, not for the exchange.
    /// </summary>
    internal Tensor Place(Tensor tensor, int to)
    {
        using var _ = Tensor.NoGrad();
        var detached = tensor.Detach();
        var device = _devices[to];
        using var hold = Hold(to);
        if (detached.Device.Equals(device)) return detached.Clone();
        return detached.Device.IsHost || device.IsHost ? detached.To(device) : detached.To(Device.Cpu).To(device);
    }

    /// <summary>
    /// Holds the ranks' devices for the calling thread until disposed (locks taken in rank order, so two holders never
    /// wait on each other; host ranks take none). Everything that touches an ILGPU rank's device from a rank's task
    /// runs inside one; never hold one across an await (the lock belongs to the thread).
    /// </summary>
    internal Holder Hold(int rank, int other = -1)
    {
        object? first = _locks[rank], second = other < 0 || other == rank ? null : _locks[other];
        if (other >= 0 && other < rank) (first, second) = (second, first);
        return new Holder(first, second);
    }

    /// <summary>The locks of <see cref="Hold"/>, released on dispose.</summary>
    internal readonly struct Holder : IDisposable
    {
        private readonly object? _first, _second;

        internal Holder(object? first, object? second)
        {
            _first = first;
            _second = second;
            if (_first is not null) Monitor.Enter(_first);
            if (_second is not null) Monitor.Enter(_second);
        }

        public void Dispose()
        {
            if (_second is not null) Monitor.Exit(_second);
            if (_first is not null) Monitor.Exit(_first);
        }
    }

    /// <summary>Test hook: called before every copy with (from, to); throwing simulates a failed copy.</summary>
    internal Action<int, int>? CopyFault { get; set; }

    /// <summary>"4 rank(s): logical-cpu:0, …".</summary>
    public override string ToString() => $"{Count} rank(s): {string.Join(", ", _names)}";

    private int CheckRank(int rank) =>
        rank >= 0 && rank < Count ? rank : throw new ArgumentOutOfRangeException(nameof(rank), $"DeviceGroup: rank {rank} is outside [0, {Count})");
}
