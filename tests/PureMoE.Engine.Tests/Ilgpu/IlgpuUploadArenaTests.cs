using PureMoE.Backends;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using PureMoE.Backends.Ilgpu;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>
/// Uploads go through a page-locked staging arena and queue an asynchronous copy instead of ILGPU's CopyFromCPU,
/// which synchronises the stream: data lands intact, and the device is waited for only when the arena is full
/// before a download has freed it.
/// </summary>
[Collection("Ilgpu")]
public sealed class IlgpuUploadArenaTests
{
    // A separate emulator accelerator: the counters are not disturbed by other tests' uploads.
    private static readonly Lazy<IlgpuBackend> s_backend = new(() =>
        (IlgpuBackend)Device.IlgpuCpuAt(5).Backend);

    private static IlgpuBackend B => s_backend.Value;

    private static float[] Data(int n, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)r.NextDouble()).ToArray();
    }

    private static float[] Read(Storage s)
    {
        var a = new float[s.Length];
        B.Download(s, 0, a, a.Length);
        return a;
    }

    [Fact]
    public void SmallUploadsNeverWaitAndLandIntact()
    {
        B.Synchronize();
        long waits = B.Uploads.Waits, uploads = B.Uploads.Uploads;
        var sent = new List<(float[] Data, Storage Buffer)>();
        for (int i = 0; i < 200; i++)
        {
            var d = Data(1 + i * 37 % 1000, i);
            sent.Add((d, B.Upload(d)));
        }
        var ids = B.Upload(Enumerable.Range(0, 99).Select(i => (long)i * 3).ToArray());
        Assert.Equal(waits, B.Uploads.Waits);                   // 200 uploads queued, none waited
        Assert.Equal(uploads + 201, B.Uploads.Uploads);
        foreach (var (d, buffer) in sent) Assert.Equal(d, Read(buffer));
        var l = new long[99];
        B.Download(ids, 0, l, 99);
        Assert.Equal(Enumerable.Range(0, 99).Select(i => (long)i * 3), l);
    }

    [Fact]
    public void AFullArenaWaitsOnceAndADownloadFreesIt()
    {
        // An accelerator of its own: the test relies on the arena's first size (4 MiB), and it grows it at the end.
        var b = (IlgpuBackend)Device.IlgpuCpuAt(6).Backend;
        float[] ReadB(Storage s) { var a = new float[s.Length]; b.Download(s, 0, a, a.Length); return a; }
        b.Synchronize();
        long waits = b.Uploads.Waits;
        // 3 × 1.5 MiB: the third does not fit the 4 MiB arena while the first two may still be in flight.
        var parts = Enumerable.Range(0, 3).Select(i => Data(384 * 1024, 100 + i)).ToArray();
        var buffers = parts.Select(p => b.Upload(p)).ToArray();
        Assert.Equal(waits + 1, b.Uploads.Waits);
        for (int i = 0; i < 3; i++) Assert.Equal(parts[i], ReadB(buffers[i]));
        // After a download the whole arena is free: the same three again wait only once more (for the third).
        buffers = parts.Select(p => b.Upload(p)).ToArray();
        Assert.Equal(waits + 2, b.Uploads.Waits);
        // An upload larger than the arena grows it.
        var big = Data(3 << 20, 7);                                // 12 MiB
        Assert.Equal(big, ReadB(b.Upload(big)));
        for (int i = 0; i < 3; i++) Assert.Equal(parts[i], ReadB(buffers[i]));
    }

    [Fact]
    public void UploadsBeyondTheStagingLimitAreCopiedDirectly()
    {
        long direct = B.Uploads.DirectUploads, waits = B.Uploads.Waits;
        var huge = Data(IlgpuUploadArena.MaxStagedBytes / sizeof(float) + 1, 11);   // 64 MiB + 4 bytes
        var small = Data(100, 12);
        var s1 = B.Upload(small);
        var s2 = B.Upload(huge);                                   // direct: waits for the device itself
        var s3 = B.Upload(small);
        Assert.Equal(direct + 1, B.Uploads.DirectUploads);
        Assert.Equal(waits, B.Uploads.Waits);
        Assert.Equal(huge, Read(s2));
        Assert.Equal(small, Read(s1));
        Assert.Equal(small, Read(s3));
    }

    [Fact]
    public void UploadsInterleavedWithKernelsKeepTheirOrder()
    {
        // Upload, compute from it, upload into the same staging region after a download: each kernel sees its own data.
        B.Synchronize();
        var a = Data(1000, 1);
        var x = B.Upload(a);
        var y = B.Allocate(DType.Float32, 1000);
        B.Binary(BinaryOp.Add, new Strided(x, 0, [1]), new Strided(x, 0, [1]), y, new Shape(1000));
        Assert.Equal(a.Select(v => v + v), Read(y));             // the download frees the arena
        var b = Data(1000, 2);
        var x2 = B.Upload(b);                                      // reuses the region a was staged in
        B.Binary(BinaryOp.Add, new Strided(x2, 0, [1]), new Strided(x, 0, [1]), y, new Shape(1000));
        Assert.Equal(b.Zip(a, (p, q) => p + q), Read(y));
    }

    [Fact]
    public void AThreadsFirstUploadStages() =>
        CudaUploadArenaTests.UploadFromAFreshThread(IlgpuDevices.Context.CreateCPUAccelerator(0));

    [Fact]
    public void WithoutPageLockedMemoryUploadsAreSynchronousCopiesAndLandIntact()
    {
        // A machine that refuses page-locked memory (a sandboxed GPU runtime may refuse cuMemHostRegister): the
        // arena cannot be made, so every upload takes ILGPU's synchronous copy, and says so once.
        var b = (IlgpuBackend)Device.IlgpuCpuAt(7).Backend;
        b.Uploads.AllocateArena = static (_, _) => throw new InvalidOperationException("cuMemHostRegister refused");
        float[] ReadB(Storage s) { var a = new float[s.Length]; b.Download(s, 0, a, a.Length); return a; }
        Assert.Null(b.UploadStagingUnavailable);
        long direct = b.Uploads.DirectUploads, waits = b.Uploads.Waits;
        var parts = Enumerable.Range(0, 5).Select(i => Data(1000 + i, 200 + i)).ToArray();
        var buffers = parts.Select(p => b.Upload(p)).ToArray();
        Assert.Equal(direct + 5, b.Uploads.DirectUploads);
        Assert.Equal(waits, b.Uploads.Waits);
        Assert.Contains("cuMemHostRegister refused", b.UploadStagingUnavailable);
        for (int i = 0; i < parts.Length; i++) Assert.Equal(parts[i], ReadB(buffers[i]));
        // Kernels see the data as before.
        var y = b.Allocate(DType.Float32, 1000);
        b.Binary(BinaryOp.Add, new Strided(buffers[0], 0, [1]), new Strided(buffers[0], 0, [1]), y, new Shape(1000));
        Assert.Equal(parts[0].Select(v => v + v), ReadB(y));
    }
}

/// <summary>
/// CUDA only: page-locking (cuMemHostRegister) acts on the calling thread's current context, which ILGPU binds for
/// its own launches and copies but not for that call. The arena binds it: an upload from a thread that has never
/// made a CUDA call (its first one is then the arena's page-lock) must stage, not fail or fall back.
/// </summary>
[Trait("Device", "Cuda")]
[Collection("Ilgpu")]
public sealed class CudaUploadArenaTests
{
    [Fact]
    public void AThreadsFirstUploadPageLocksInItsOwnContext()
    {
        int count = 0;
        try { count = IlgpuDevices.CudaCount; } catch (Exception) { count = 0; }
        Assert.SkipUnless(count > 0, "no CUDA device on this machine");
        UploadFromAFreshThread(IlgpuDevices.Context.GetCudaDevices()[0].CreateAccelerator(IlgpuDevices.Context));
    }

    /// <summary>A backend of its own (a fresh arena) whose accelerator was bound on this thread only; one upload from another.</summary>
    internal static void UploadFromAFreshThread(ILGPU.Runtime.Accelerator accelerator)
    {
        using var b = new IlgpuBackend(accelerator);
        var target = b.Allocate(DType.Float32, 1000);
        var data = Enumerable.Range(0, 1000).Select(i => i * 0.5f).ToArray();
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try { b.Uploads.Upload(((IlgpuStorage)target).F, data); }
            catch (Exception e) { failure = e; }
        });
        thread.Start();
        thread.Join();
        Assert.Null(failure);
        Assert.Null(b.UploadStagingUnavailable);
        Assert.Equal(0, b.Uploads.DirectUploads);
        var back = new float[1000];
        b.Download(target, 0, back, 1000);
        Assert.Equal(data, back);
    }
}

