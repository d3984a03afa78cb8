using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>
/// Device → host copies through one page-locked buffer, kept for the accelerator's life. ILGPU 1.5.3's
/// <c>CopyToCPU(stream, span)</c> (its IL, read with reflection) wraps the destination for each call, page-locking
/// it there when the context's page-locking mode asks (cuMemHostRegister, then cuMemHostUnregister: slow calls,
/// slower in a sandboxed GPU runtime), copies, and synchronises the stream, twice on the page-locked way; the
/// backend then synchronised once more. A router's decision is read so once per MoE layer and step, a decoded
/// token's several times. Here a read queues one asynchronous copy into the buffer, synchronises once, and copies
/// the bytes out on the host. The buffer grows to fit a read, up to <see cref="MaxStagedBytes"/>;
/// larger reads (saving a big checkpoint) take ILGPU's own copy, whose page-locking costs little beside the copy.
/// Where the machine refuses page-locked memory, every read takes ILGPU's copy; <see cref="StagingUnavailable"/> says why.
/// </summary>
internal sealed class IlgpuDownloadBuffer : IDisposable
{
    private const long InitialBytes = 1L << 20;  // 1 MiB: a routing decision of 64K (token, expert) pairs

    /// <summary>Reads larger than this (64 MiB) are copied by ILGPU directly, without staging.</summary>
    public const int MaxStagedBytes = 64 << 20;

    private readonly Accelerator _accelerator;
    private readonly Lock _lock = new();
    private PageLockedArray1D<byte>? _buffer;

    public IlgpuDownloadBuffer(Accelerator accelerator) => _accelerator = accelerator;

    /// <summary>Reads staged through the buffer so far.</summary>
    public long StagedReads { get; private set; }

    /// <summary>Reads copied by ILGPU directly: larger than <see cref="MaxStagedBytes"/>, or all of them without staging.</summary>
    public long DirectReads { get; private set; }

    /// <summary>Null while reads are staged; otherwise why page-locked memory could not be had.</summary>
    public string? StagingUnavailable { get; private set; }

    /// <summary>Allocates the page-locked buffer (tests replace it to make page-locking fail).</summary>
    internal Func<Accelerator, long, PageLockedArray1D<byte>> AllocateBuffer { get; set; } =
        static (accelerator, bytes) => accelerator.AllocatePageLocked1D<byte>(bytes);

    /// <summary>Copies <paramref name="source"/> into <paramref name="destination"/> once the work queued on <paramref name="stream"/> is done; returns with the stream idle.</summary>
    public void Read<T>(ArrayView<T> source, Span<T> destination, AcceleratorStream stream) where T : unmanaged
    {
        if (destination.IsEmpty) return;
        var bytes = MemoryMarshal.AsBytes(destination);
        lock (_lock)
        {
            if (bytes.Length > MaxStagedBytes || StagingUnavailable is not null || !EnsureBuffer(bytes.Length))
            {
                source.SubView(0, destination.Length).CopyToCPU(stream, destination);
                DirectReads++;
                return;
            }
            ArrayView<T> staged = _buffer!.ArrayView.SubView(0, bytes.Length).Cast<T>();
            // Called on the device view, as ILGPU's own CopyToPageLockedAsync does: the device buffer queues the copy.
            source.SubView(0, destination.Length).CopyTo(stream, staged);
            stream.Synchronize();
            _buffer.Span[..bytes.Length].CopyTo(bytes);
            StagedReads++;
        }
    }

    /// <summary>A buffer of at least <paramref name="bytes"/>; false (and <see cref="StagingUnavailable"/> set) when page-locking is refused.</summary>
    private bool EnsureBuffer(int bytes)
    {
        if (_buffer is not null && _buffer.Length >= bytes) return true;
        // Page-locking acts on the calling thread's current CUDA context: bind it (see IlgpuUploadArena).
        using var bound = _accelerator.BindScoped();
        _buffer?.Dispose();
        _buffer = null;
        try
        {
            _buffer = AllocateBuffer(_accelerator, Math.Min(MaxStagedBytes, Math.Max(InitialBytes, 2L * bytes)));
            return true;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            StagingUnavailable = $"page-locked host memory unavailable on {_accelerator.Name} ({e.GetType().Name}: {e.Message}); " +
                                 "reads are ILGPU's copies";
            return false;
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            using var bound = _accelerator.BindScoped();
            _buffer?.Dispose();
            _buffer = null;
        }
    }
}
