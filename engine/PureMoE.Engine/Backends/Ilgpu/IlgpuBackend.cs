using ILGPU;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

/// <summary>
/// Every <see cref="IBackend"/> primitive as ILGPU kernels, for one accelerator (CUDA, OpenCL or ILGPU's CPU
/// emulator). Kernels live in <see cref="IlgpuKernels"/>, one file per family; each is compiled once per
/// accelerator on first use and cached in a field. Group sizes come from the accelerator (its warp size and
/// maximum group size), never from a constant. All work is queued in order on the accelerator's default stream;
/// only downloads wait for it (uploads go through a page-locked staging arena and do not). Buffers come from a caching <see cref="IlgpuMemoryPool"/>.
/// Elements are float32 or int64; float64 is not supported on ILGPU devices (a clear NotSupportedException).
/// Index kernels cannot throw on the device: an out-of-range index reads as zero and adds nothing (the CPU
/// backends throw). A backend is not thread-safe: use a device from one thread at a time (like a CUDA stream).
/// </summary>
public sealed partial class IlgpuBackend : IBackend, IDisposable
{
    private readonly object _compileLock = new();

    /// <summary>Wraps an accelerator (the backend owns it and disposes it).</summary>
    public IlgpuBackend(Accelerator accelerator)
    {
        Accelerator = accelerator;
        Pool = new IlgpuMemoryPool(accelerator);
        Uploads = new IlgpuUploadArena(accelerator);
        Downloads = new IlgpuDownloadBuffer(accelerator);
        WarpSize = Math.Max(1, accelerator.WarpSize);
        // A power of two (tree reductions halve it), at most 256, from the accelerator's own limit.
        int max = Math.Min(256, accelerator.MaxNumThreadsPerGroup);
        GroupSize = 1 << (31 - int.LeadingZeroCount(Math.Max(1, max)));
    }

    /// <summary>The accelerator.</summary>
    public Accelerator Accelerator { get; }

    /// <summary>The memory pool of this accelerator.</summary>
    public IlgpuMemoryPool Pool { get; }

    /// <summary>Host → device copies, queued without waiting for the device (see <see cref="IlgpuUploadArena"/>).</summary>
    internal IlgpuUploadArena Uploads { get; }

    /// <summary>Device → host copies through a page-locked buffer, one synchronisation each (see <see cref="IlgpuDownloadBuffer"/>).</summary>
    internal IlgpuDownloadBuffer Downloads { get; }

    /// <summary>The accelerator's warp size.</summary>
    public int WarpSize { get; }

    /// <summary>Threads per group of the grouped kernels (row reductions, SGEMM): a power of two ≤ 256 the accelerator allows.</summary>
    public int GroupSize { get; }

    private long _hostReads, _hostReadBytes;
    private readonly LaunchCounter _launches = new();
    private long _compileTicks;
    private int _kernelsCompiled;

    /// <summary>
    /// Device → host reads so far (calls of <see cref="Download"/>: ToArray, Item, To(Device.Cpu), ...). Each one
    /// waits for all queued work, so a training step should do as few as its algorithm needs; tests assert the count.
    /// </summary>
    public long HostReads => Interlocked.Read(ref _hostReads);

    /// <summary>
    /// Work items queued on the device so far: kernel launches (an ILGPU.Algorithms radix sort counts once, though
    /// it launches several kernels), device-to-device copies and fills. Each costs a few microseconds of host time
    /// on a GPU, whatever its size; a training step's count says how much of a small step that can be.
    /// </summary>
    public long Launches => _launches.Count;

    /// <summary>
    /// <see cref="Launches"/> per kernel (named by its cache field, e.g. "adamW", "binary Mul"), "zero fill" and
    /// "device copy": where the launches come from. A snapshot.
    /// </summary>
    public IReadOnlyDictionary<string, long> LaunchesByKernel => _launches.ByName;

    /// <summary>Kernels compiled and loaded so far (each once per accelerator, on its first use).</summary>
    public int KernelsCompiled => Volatile.Read(ref _kernelsCompiled);

    /// <summary>
    /// Time spent compiling and loading the <see cref="KernelsCompiled"/>: ILGPU's compilation of the kernel's .NET
    /// code (to PTX on CUDA) and the driver's load of the result (on CUDA it assembles the PTX for the GPU).
    /// </summary>
    public TimeSpan KernelCompileTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _compileTicks));

    /// <summary>Bytes copied by the <see cref="HostReads"/> so far.</summary>
    public long HostReadBytes => Interlocked.Read(ref _hostReadBytes);

    private long _hostReadTicks, _uploadTicks;

    /// <summary>
    /// Host time spent in <see cref="Download"/> so far: waiting for the queued work, then the copy. Benchmarks
    /// split a phase's time by it (a router's one read, say) to tell the wait and copy from the host's own work.
    /// </summary>
    internal TimeSpan HostReadTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _hostReadTicks));

    /// <summary>Host time spent in <see cref="Upload"/> so far (staging and queueing the copy; it waits only when the arena is full).</summary>
    internal TimeSpan UploadTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _uploadTicks));

    /// <summary>
    /// Null while host → device uploads are queued without waiting (staged in page-locked memory); otherwise why
    /// this machine refused page-locked memory, and every upload is a synchronous copy (correct, slower).
    /// </summary>
    public string? UploadStagingUnavailable => Uploads.StagingUnavailable;

    /// <summary>Waits for all queued work.</summary>
    public void Synchronize()
    {
        Accelerator.Synchronize();
        Uploads.Synchronized();
    }

    /// <summary>Frees the pool and the accelerator.</summary>
    public void Dispose()
    {
        try { Accelerator.Synchronize(); } catch (Exception) { /* disposing anyway */ }
        Uploads.Dispose();
        Downloads.Dispose();
        Pool.Dispose();
        Accelerator.Dispose();
    }

    // ---------------------------------------------------------------- kernel cache

    /// <summary>
    /// Compiles a kernel on first use (under a lock) and keeps it, counted (<see cref="Launches"/>, and per kernel
    /// under <paramref name="name"/>: by default the cache field's name), in <paramref name="field"/>. The compile is
    /// timed (<see cref="KernelCompileTime"/>): on a GPU it is most of a first training step.
    /// </summary>
    private T Cached<T>(ref T? field, Func<T> load, [CallerArgumentExpression(nameof(field))] string name = "") where T : Delegate
    {
        var k = Volatile.Read(ref field);
        if (k is not null) return k;
        lock (_compileLock)
        {
            if (field is null)
            {
                long start = Stopwatch.GetTimestamp();
                var loaded = load();
                Interlocked.Add(ref _compileTicks, Stopwatch.GetTimestamp() - start);
                Interlocked.Increment(ref _kernelsCompiled);
                field = _launches.Wrap(loaded, name.TrimStart('_'));
            }
            return field;
        }
    }

    private Action<Index1D, T1, T2> Auto<T1, T2>(Action<Index1D, T1, T2> kernel)
        where T1 : struct where T2 : struct => Accelerator.LoadAutoGroupedStreamKernel(kernel);

    private Action<Index1D, T1, T2, T3> Auto<T1, T2, T3>(Action<Index1D, T1, T2, T3> kernel)
        where T1 : struct where T2 : struct where T3 : struct => Accelerator.LoadAutoGroupedStreamKernel(kernel);

    private Action<Index1D, T1, T2, T3, T4> Auto<T1, T2, T3, T4>(Action<Index1D, T1, T2, T3, T4> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct => Accelerator.LoadAutoGroupedStreamKernel(kernel);

    private Action<Index1D, T1, T2, T3, T4, T5> Auto<T1, T2, T3, T4, T5>(Action<Index1D, T1, T2, T3, T4, T5> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct =>
        Accelerator.LoadAutoGroupedStreamKernel(kernel);

    /// <summary>A launch of <paramref name="groups"/> groups of <see cref="GroupSize"/> threads with one float of shared memory per thread.</summary>
    private KernelConfig RowConfig(int groups) =>
        new(new Index1D(groups), new Index1D(GroupSize), SharedMemoryConfig.RequestDynamic<float>(GroupSize));

    // ---------------------------------------------------------------- storage helpers

    private IlgpuStorage S(Storage s, string op)
    {
        if (s is IlgpuStorage g && ReferenceEquals(g.Accelerator, Accelerator)) return g;
        throw new InvalidOperationException(
            $"{op}: the buffer ({s.GetType().Name}, {s.DType.Name()}) does not belong to this ILGPU device ({Accelerator.Name}); move tensors with To(device)");
    }

    private ArrayView<float> F(Storage s, string op) => S(s, op).F;

    private ArrayView<long> L(Storage s, string op) => S(s, op).L;

    private static NotSupportedException Float64(string op) =>
        new($"{op}: float64 is not supported on ILGPU devices (float32 and int64 only); keep float64 work on Device.Cpu");

    private IlgpuStorage Rent(DType dtype, int length, string op)
    {
        if (dtype == DType.Float64) throw Float64(op);
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length), length, $"{op}: negative length");
        long bytes = Math.Max(1L, (long)length * dtype.SizeInBytes());
        return new IlgpuStorage(Pool, Pool.Rent(bytes), dtype, length);
    }

    // ---------------------------------------------------------------- memory and copies

    /// <inheritdoc />
    public Storage Allocate(DType dtype, int length)
    {
        var s = Rent(dtype, length, "Allocate");
        if (length > 0)
        {
            s.Bytes.MemSetToZero(Accelerator.DefaultStream);
            _launches.Add("zero fill");
        }
        return s;
    }

    /// <summary>
    /// A buffer whose contents are whatever the pool last held there, for outputs a kernel writes entirely: it
    /// saves the memset <see cref="Allocate"/> pays (a full pass over the buffer on a GPU).
    /// </summary>
    public Storage AllocateUninitialized(DType dtype, int length)
    {
        var s = Rent(dtype, length, "Allocate");
        if (UninitializedMemory.Poison && length > 0) s.Bytes.MemSet(Accelerator.DefaultStream, 0xFF);
        return s;
    }

    /// <inheritdoc />
    public Storage Upload(Array data)
    {
        long start = Stopwatch.GetTimestamp();
        try { return UploadUntimed(data); }
        finally { Interlocked.Add(ref _uploadTicks, Stopwatch.GetTimestamp() - start); }
    }

    private Storage UploadUntimed(Array data)
    {
        switch (data)
        {
            case float[] f:
            {
                var s = Rent(DType.Float32, f.Length, "Upload");
                Uploads.Upload(s.F, f);
                return s;
            }
            case long[] l:
            {
                var s = Rent(DType.Int64, l.Length, "Upload");
                Uploads.Upload(s.L, l);
                return s;
            }
            case double[]:
                throw Float64("Upload");
            default:
                throw new ArgumentException($"Upload: unsupported array type {data.GetType().Name}");
        }
    }

    /// <inheritdoc />
    public void Download(Storage src, int srcOffset, Array dst, int count)
    {
        if (count == 0) return;
        long start = Stopwatch.GetTimestamp();
        var s = S(src, "Download");
        Interlocked.Increment(ref _hostReads);
        Interlocked.Add(ref _hostReadBytes, (long)count * s.DType.SizeInBytes());
        var stream = Accelerator.DefaultStream;
        switch (dst)
        {
            case float[] f when s.DType == DType.Float32:
                Downloads.Read(s.F.SubView(srcOffset, count), f.AsSpan(0, count), stream);
                break;
            case long[] l when s.DType == DType.Int64:
                Downloads.Read(s.L.SubView(srcOffset, count), l.AsSpan(0, count), stream);
                break;
            default:
                throw new ArgumentException($"Download: a {s.DType.Name()} buffer cannot be read into {dst.GetType().Name}");
        }
        // The read waited for the stream: every queued upload is done, and the upload arena is free again.
        Uploads.Synchronized();
        Interlocked.Add(ref _hostReadTicks, Stopwatch.GetTimestamp() - start);
    }

    private Action<Index1D, ArrayView<float>, float>? _fillF;
    private Action<Index1D, ArrayView<long>, long>? _fillL;

    /// <inheritdoc />
    public void Fill(Storage dst, int offset, int count, double value)
    {
        if (count == 0) return;
        var d = S(dst, "Fill");
        if (d.DType == DType.Float32)
            Cached(ref _fillF, () => Auto<ArrayView<float>, float>(IlgpuKernels.Fill))(count, d.F.SubView(offset, count), (float)value);
        else
            Cached(ref _fillL, () => Auto<ArrayView<long>, long>(IlgpuKernels.Fill))(count, d.L.SubView(offset, count), (long)value);
    }

    private Action<Index1D, ArrayView<float>, ArrayView<float>, StridedArgs>? _copyF;
    private Action<Index1D, ArrayView<long>, ArrayView<long>, StridedArgs>? _copyL;
    private Action<Index1D, ArrayView<float>, ArrayView<long>, StridedArgs>? _copyFL;
    private Action<Index1D, ArrayView<long>, ArrayView<float>, StridedArgs>? _copyLF;

    /// <inheritdoc />
    public void CopyStrided(Strided src, Shape shape, Storage dst, int dstOffset)
    {
        int n = shape.Numel;
        if (n == 0) return;
        var s = S(src.Storage, "CopyStrided");
        var d = S(dst, "CopyStrided");
        var args = StridedArgs.Create(shape, "CopyStrided", src);
        switch (s.DType, d.DType)
        {
            case (DType.Float32, DType.Float32):
                Cached(ref _copyF, () => Auto<ArrayView<float>, ArrayView<float>, StridedArgs>(IlgpuKernels.CopyStrided))(n, s.F, d.F.SubView(dstOffset, n), args);
                break;
            case (DType.Int64, DType.Int64):
                Cached(ref _copyL, () => Auto<ArrayView<long>, ArrayView<long>, StridedArgs>(IlgpuKernels.CopyStrided))(n, s.L, d.L.SubView(dstOffset, n), args);
                break;
            case (DType.Float32, DType.Int64):
                Cached(ref _copyFL, () => Auto<ArrayView<float>, ArrayView<long>, StridedArgs>(IlgpuKernels.CopyFloatToLong))(n, s.F, d.L.SubView(dstOffset, n), args);
                break;
            case (DType.Int64, DType.Float32):
                Cached(ref _copyLF, () => Auto<ArrayView<long>, ArrayView<float>, StridedArgs>(IlgpuKernels.CopyLongToFloat))(n, s.L, d.F.SubView(dstOffset, n), args);
                break;
            default:
                throw Float64("CopyStrided");
        }
    }
}
