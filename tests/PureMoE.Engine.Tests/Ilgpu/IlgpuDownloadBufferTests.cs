using ILGPU.Runtime.Cuda;
using PureMoE.Backends;
using PureMoE.Backends.Ilgpu;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>
/// Reads (device → host) go through one page-locked buffer with one synchronisation each, instead of ILGPU's
/// CopyToCPU, which wraps (and may page-lock) the destination per call: data comes back intact whatever its size
/// and offset, after the work queued before the read, and without page-locked memory every read is ILGPU's copy.
/// </summary>
[Collection("Ilgpu")]
public sealed class IlgpuDownloadBufferTests
{
    // Accelerators of their own: the counters are not disturbed by other tests' reads.
    private static readonly Lazy<IlgpuBackend> s_backend = new(() => (IlgpuBackend)Device.IlgpuCpuAt(10).Backend);

    private static IlgpuBackend B => s_backend.Value;

    private static float[] Data(int n, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)r.NextDouble()).ToArray();
    }

    [Fact]
    public void ReadsOfEverySizeAndOffsetComeBackIntactThroughTheBuffer()
    {
        long staged = B.Downloads.StagedReads, direct = B.Downloads.DirectReads;
        int reads = 0;
        foreach (int n in new[] { 1, 3, 1000, 70_000, 600_000 })   // the last two grow the buffer past its first 1 MiB
        {
            var data = Data(n, n);
            var s = B.Upload(data);
            foreach (int offset in new[] { 0, n / 3 })
            {
                var back = new float[n - offset];
                B.Download(s, offset, back, back.Length);
                Assert.Equal(data.Skip(offset), back);
                reads++;
            }
            var ids = Enumerable.Range(0, n).Select(i => (long)i * 7 - 5).ToArray();
            var l = new long[n];
            B.Download(B.Upload(ids), 0, l, n);
            Assert.Equal(ids, l);
            reads++;
        }
        Assert.Equal(staged + reads, B.Downloads.StagedReads);
        Assert.Equal(direct, B.Downloads.DirectReads);
        Assert.Null(B.Downloads.StagingUnavailable);
    }

    [Fact]
    public void AReadWaitsForTheWorkQueuedBeforeIt()
    {
        // Kernels queued, then one read: it sees their result, and a second read of an earlier buffer is intact too.
        var x = Data(5000, 1);
        var a = B.Upload(x);
        var y = B.Allocate(DType.Float32, 5000);
        for (int i = 0; i < 3; i++)
            B.Binary(BinaryOp.Add, new Strided(i == 0 ? a : y, 0, [1]), new Strided(a, 0, [1]), y, new Shape(5000));
        var back = new float[5000];
        B.Download(y, 0, back, 5000);
        Assert.Equal(x.Select(v => v + v + v + v), back);
        B.Download(a, 0, back, 5000);
        Assert.Equal(x, back);
    }

    [Fact]
    public void ReadsLargerThanTheBufferLimitAreIlgpusCopy()
    {
        var b = B;
        int n = IlgpuDownloadBuffer.MaxStagedBytes / sizeof(float) + 5;
        var s = b.Allocate(DType.Float32, n);
        b.Fill(s, 0, n, 2.5);
        long direct = b.Downloads.DirectReads;
        var back = new float[n];
        b.Download(s, 0, back, n);
        Assert.Equal(direct + 1, b.Downloads.DirectReads);
        Assert.True(back.All(v => v == 2.5f));
    }

    [Fact]
    public void WithoutPageLockedMemoryReadsAreIlgpusCopyAndComeBackIntact()
    {
        var b = (IlgpuBackend)Device.IlgpuCpuAt(11).Backend;
        b.Downloads.AllocateBuffer = static (_, _) => throw new InvalidOperationException("cuMemHostRegister refused");
        var data = Data(3000, 7);
        var s = b.Upload(data);
        var back = new float[3000];
        b.Download(s, 0, back, 3000);
        b.Download(s, 0, back, 3000);
        Assert.Equal(data, back);
        Assert.Equal(2, b.Downloads.DirectReads);
        Assert.Equal(0, b.Downloads.StagedReads);
        Assert.Contains("cuMemHostRegister refused", b.Downloads.StagingUnavailable);
    }
}

/// <summary>
/// CUDA only: the buffer's page-locking acts on the calling thread's current context, which the buffer binds: a
/// read from a thread that has never made a CUDA call must stage, not fail or fall back.
/// </summary>
[Trait("Device", "Cuda")]
[Collection("Ilgpu")]
public sealed class CudaDownloadBufferTests
{
    [Fact]
    public void AThreadsFirstReadPageLocksInItsOwnContext()
    {
        int count = 0;
        try { count = IlgpuDevices.CudaCount; } catch (Exception) { count = 0; }
        Assert.SkipUnless(count > 0, "no CUDA device on this machine");
        using var b = new IlgpuBackend(IlgpuDevices.Context.GetCudaDevices()[0].CreateAccelerator(IlgpuDevices.Context));
        var data = Enumerable.Range(0, 100_000).Select(i => i * 0.25f).ToArray();
        var source = b.Upload(data);
        var back = new float[data.Length];
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try { b.Download(source, 0, back, back.Length); }
            catch (Exception e) { failure = e; }
        });
        thread.Start();
        thread.Join();
        Assert.Null(failure);
        Assert.Null(b.Downloads.StagingUnavailable);
        Assert.Equal(1, b.Downloads.StagedReads);
        Assert.Equal(data, back);
    }
}
