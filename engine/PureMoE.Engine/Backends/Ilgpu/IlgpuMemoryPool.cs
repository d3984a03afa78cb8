using ILGPU;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>
/// A caching allocator for one accelerator. Requests are rounded up to a size class (powers of two split in four
/// steps: 1, 1.25, 1.5, 1.75 × 2ᵏ bytes, at least 256 bytes, so at most 25 % is wasted) and served from that
/// class's free list when it has a buffer; only a miss allocates device memory. A storage's Dispose, or its
/// finalizer when it was dropped, returns its buffer to the free list; buffers are freed only by
/// <see cref="Trim"/> (called automatically when an allocation runs out of memory) and when the device is disposed.
/// The pool keeps every buffer it handed out reachable, so a buffer is never finalized while a storage uses it.
/// Reuse is safe without synchronisation because every kernel and copy of a device runs in order on its one
/// default stream. Thread-safe.
/// </summary>
public sealed class IlgpuMemoryPool : IDisposable
{
    private readonly object _lock = new();
    private readonly Dictionary<long, Stack<MemoryBuffer1D<byte, Stride1D.Dense>>> _free = new();
    private readonly HashSet<MemoryBuffer1D<byte, Stride1D.Dense>> _leased = new(ReferenceEqualityComparer.Instance);
    private bool _disposed;

    internal IlgpuMemoryPool(Accelerator accelerator) => Accelerator = accelerator;

    /// <summary>The accelerator whose memory this pool manages.</summary>
    public Accelerator Accelerator { get; }

    /// <summary>Bytes held in free lists (cached, not in use).</summary>
    public long CachedBytes { get; private set; }

    /// <summary>Bytes in buffers currently leased to storages.</summary>
    public long LeasedBytes { get; private set; }

    /// <summary>The most <see cref="LeasedBytes"/> has been since the pool was made or <see cref="ResetPeak"/>.</summary>
    public long PeakLeasedBytes { get; private set; }

    /// <summary>Starts <see cref="PeakLeasedBytes"/> again from what is leased now.</summary>
    public void ResetPeak()
    {
        lock (_lock) PeakLeasedBytes = LeasedBytes;
    }

    /// <summary>Number of device allocations made so far (misses); a steady training step should stop adding to it.</summary>
    public long Allocations { get; private set; }

    /// <summary>Allocates device memory (tests replace it to make the device run out).</summary>
    internal Func<Accelerator, long, MemoryBuffer1D<byte, Stride1D.Dense>> AllocateBuffer { get; set; } =
        static (accelerator, bytes) => accelerator.Allocate1D<byte>(bytes);

    /// <summary>The size class of a request of <paramref name="bytes"/> bytes.</summary>
    public static long SizeClass(long bytes) => bytes <= 256 ? 256 : SizeClasses.RoundUp(bytes);

    /// <summary>A buffer of at least <paramref name="bytes"/> bytes (contents undefined).</summary>
    internal MemoryBuffer1D<byte, Stride1D.Dense> Rent(long bytes)
    {
        long size = SizeClass(bytes);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_free.TryGetValue(size, out var stack) && stack.Count > 0)
            {
                var b = stack.Pop();
                CachedBytes -= size;
                return Lease(b, size);
            }
        }
        MemoryBuffer1D<byte, Stride1D.Dense> buffer;
        try
        {
            buffer = AllocateBuffer(Accelerator, size);
        }
        catch (Exception e) when (e is OutOfMemoryException or AcceleratorException)
        {
            // Give the cached buffers back to the device and try once more.
            long cached = CachedBytes;
            Trim();
            try
            {
                buffer = AllocateBuffer(Accelerator, size);
            }
            catch (Exception again) when (again is OutOfMemoryException or AcceleratorException)
            {
                throw new OutOfMemoryException(
                    $"{Accelerator.Name}: out of device memory allocating {Mib(size)} ({Mib(bytes)} asked): tensors hold " +
                    $"{Mib(LeasedBytes)} of it, and the {Mib(cached)} the pool had cached were freed first. Make the batch, " +
                    $"the context or the model smaller, or dispose tensors sooner (DeviceScope). {again.Message}", again);
            }
        }
        lock (_lock)
        {
            Allocations++;
            return Lease(buffer, size);
        }
    }

    private MemoryBuffer1D<byte, Stride1D.Dense> Lease(MemoryBuffer1D<byte, Stride1D.Dense> b, long size)
    {
        _leased.Add(b);
        LeasedBytes += size;
        if (LeasedBytes > PeakLeasedBytes) PeakLeasedBytes = LeasedBytes;
        return b;
    }

    private static string Mib(long bytes) => $"{bytes / 1048576.0:F1} MiB";

    /// <summary>Puts a leased buffer back on its free list.</summary>
    internal void Return(MemoryBuffer1D<byte, Stride1D.Dense> buffer)
    {
        lock (_lock)
        {
            if (!_leased.Remove(buffer)) return;
            long size = buffer.Length;
            LeasedBytes -= size;
            if (_disposed) return;
            if (!_free.TryGetValue(size, out var stack)) _free[size] = stack = new();
            stack.Push(buffer);
            CachedBytes += size;
        }
    }

    /// <summary>Frees every cached (unused) buffer.</summary>
    public void Trim()
    {
        List<MemoryBuffer1D<byte, Stride1D.Dense>> drop = [];
        lock (_lock)
        {
            foreach (var s in _free.Values) drop.AddRange(s);
            _free.Clear();
            CachedBytes = 0;
        }
        if (drop.Count > 0) Accelerator.Synchronize();
        foreach (var b in drop) b.Dispose();
    }

    /// <summary>Frees all memory of the pool (cached and leased); storages of this device are unusable afterwards.</summary>
    public void Dispose()
    {
        List<MemoryBuffer1D<byte, Stride1D.Dense>> drop = [];
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var s in _free.Values) drop.AddRange(s);
            drop.AddRange(_leased);
            _free.Clear();
            _leased.Clear();
        }
        foreach (var b in drop) b.Dispose();
    }
}
