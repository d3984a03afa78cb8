using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>
/// Host → device copies that do not wait for the device. ILGPU 1.5.3's <c>CopyFromCPU</c> synchronises the stream
/// after its copy (the managed array is pinned only for the call), so each upload — a batch, a dispatch layout, a
/// grouped GEMM's tile table — would drain the queue: a host synchronisation hidden in every upload. Instead an
/// upload writes its data into a page-locked staging arena and queues an asynchronous copy from there. A region of
/// the arena is written again only after the stream has been synchronised (each download does that, and the
/// backend tells the arena), so no queued copy can read overwritten bytes. When the arena is full before that, it
/// synchronises once itself (counted in <see cref="Waits"/>) and starts over; it grows to fit a large upload, up to
/// <see cref="MaxStagedBytes"/>: larger uploads (loading a big checkpoint) take ILGPU's own synchronous copy, whose
/// wait costs nothing beside the copy itself. Where the machine cannot page-lock host memory (ILGPU registers it
/// with cuMemHostRegister, which a sandboxed GPU runtime may refuse), every upload takes that synchronous copy
/// instead: slower, never wrong; <see cref="StagingUnavailable"/> says why.
/// </summary>
internal sealed class IlgpuUploadArena : IDisposable
{
    private const int Alignment = 256;           // every copy starts 256-byte aligned, as device allocations do
    private const long InitialBytes = 4L << 20;  // 4 MiB: a training step's layouts and tables fit many times over

    /// <summary>Uploads larger than this (64 MiB) are copied directly, without staging.</summary>
    public const int MaxStagedBytes = 64 << 20;

    private readonly Accelerator _accelerator;
    private readonly Lock _lock = new();
    private PageLockedArray1D<byte>? _arena;
    private long _used;

    public IlgpuUploadArena(Accelerator accelerator) => _accelerator = accelerator;

    /// <summary>Uploads so far.</summary>
    public long Uploads { get; private set; }

    /// <summary>Times the arena was full and had to wait for the device (0 in a steady training step).</summary>
    public long Waits { get; private set; }

    /// <summary>Uploads copied directly, each waiting for the device: larger than <see cref="MaxStagedBytes"/>, or all of them without staging.</summary>
    public long DirectUploads { get; private set; }

    /// <summary>Null while uploads are staged; otherwise why page-locked staging failed (every upload then waits).</summary>
    public string? StagingUnavailable { get; private set; }

    /// <summary>Allocates the page-locked arena (tests replace it to make page-locking fail).</summary>
    internal Func<Accelerator, long, PageLockedArray1D<byte>> AllocateArena { get; set; } =
        static (accelerator, bytes) => accelerator.AllocatePageLocked1D<byte>(bytes);

    /// <summary>Queues a copy of <paramref name="data"/> into <paramref name="target"/> on the default stream; returns at once.</summary>
    public void Upload<T>(ArrayView<T> target, ReadOnlySpan<T> data) where T : unmanaged
    {
        if (data.IsEmpty) return;
        var bytes = MemoryMarshal.AsBytes(data);
        lock (_lock)
        {
            var stream = _accelerator.DefaultStream;
            if (bytes.Length > MaxStagedBytes || StagingUnavailable is not null)
            {
                CopyDirectly(target, data, stream);
                return;
            }
            long start = (_used + Alignment - 1) / Alignment * Alignment;
            if (_arena is null || start + bytes.Length > _arena.Length)
            {
                if (_used > 0)
                {
                    // Copies queued from the arena may still be reading it: wait for them before reusing it.
                    stream.Synchronize();
                    Waits++;
                }
                if (_arena is null || bytes.Length > _arena.Length)
                {
                    // Page-locking and unlocking (cuMemHostRegister/Unregister) act on the calling thread's current
                    // CUDA context, and ILGPU binds it only for its own launches and copies: bind it here, so that a
                    // thread whose first CUDA call this is does not fail with CUDA_ERROR_INVALID_CONTEXT.
                    using var bound = _accelerator.BindScoped();
                    _arena?.Dispose();
                    _arena = null;
                    if (!TryAllocateArena(Math.Max(InitialBytes, 2L * bytes.Length)))
                    {
                        CopyDirectly(target, data, stream);   // and every upload after this one
                        return;
                    }
                }
                start = 0;
            }
            var region = _arena!.Span.Slice((int)start, bytes.Length);
            bytes.CopyTo(region);
            ArrayView<byte> staged = _arena.ArrayView.SubView(start, bytes.Length);
            var source = staged.Cast<T>();
            target.SubView(0, data.Length).CopyFrom(stream, source);
            _used = start + bytes.Length;
            Uploads++;
        }
    }

    /// <summary>ILGPU's own copy, which synchronises the stream: afterwards nothing queued reads the arena.</summary>
    private void CopyDirectly<T>(ArrayView<T> target, ReadOnlySpan<T> data, AcceleratorStream stream) where T : unmanaged
    {
        target.SubView(0, data.Length).CopyFromCPU(stream, data);
        _used = 0;
        DirectUploads++;
        Uploads++;
    }

    /// <summary>
    /// Allocates the arena; false (and <see cref="StagingUnavailable"/> set) when the machine refuses page-locked
    /// memory. Running out of host memory is not that: it is thrown as it is.
    /// </summary>
    private bool TryAllocateArena(long bytes)
    {
        try
        {
            _arena = AllocateArena(_accelerator, bytes);
            return true;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            StagingUnavailable = $"page-locked host memory unavailable on {_accelerator.Name} ({e.GetType().Name}: {e.Message}); " +
                                 "uploads are synchronous copies";
            return false;
        }
    }

    /// <summary>The stream has been synchronised: every queued copy is done, the whole arena is free again.</summary>
    public void Synchronized()
    {
        lock (_lock) _used = 0;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            using var bound = _accelerator.BindScoped();
            _arena?.Dispose();
            _arena = null;
        }
    }
}
