using PureMoE.Backends;
using PureMoE.Backends.Ilgpu;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>
/// The device memory pool when the device runs out: it frees what it has cached and tries again, and if that fails
/// too, says so in terms a user can act on (the device, the size, what tensors hold, what was freed).
/// </summary>
[Collection("Ilgpu")]
public sealed class IlgpuMemoryPoolTests
{
    [Fact]
    public void RunningOutFreesTheCacheRetriesAndThenNamesTheDeviceAndTheSizes()
    {
        // An accelerator of its own: the test replaces its allocator.
        var backend = (IlgpuBackend)Device.IlgpuCpuAt(8).Backend;
        var pool = backend.Pool;
        var original = pool.AllocateBuffer;
        try
        {
            // A cached 4 MiB buffer, and a tensor-held one.
            backend.AllocateUninitialized(DType.Float32, 1 << 20).Dispose();
            using var held = backend.AllocateUninitialized(DType.Float32, 1 << 18);
            Assert.True(pool.CachedBytes >= 4 << 20);

            // The device refuses once: the cache is freed and the retry succeeds.
            int calls = 0;
            pool.AllocateBuffer = (accelerator, bytes) =>
                ++calls == 1 ? throw new OutOfMemoryException("device full") : original(accelerator, bytes);
            using (var s = backend.AllocateUninitialized(DType.Float32, 3 << 20)) Assert.Equal(3 << 20, s.Length);
            Assert.Equal(2, calls);

            // It refuses every time: one clear error, naming the device and the sizes.
            backend.AllocateUninitialized(DType.Float32, 1 << 20).Dispose();
            pool.AllocateBuffer = (_, _) => throw new OutOfMemoryException("device full");
            long cached = pool.CachedBytes;   // the 12 MiB and the 4 MiB buffers just disposed
            Assert.Equal(16L << 20, cached);
            var e = Assert.Throws<OutOfMemoryException>(() => backend.AllocateUninitialized(DType.Float32, 5 << 20));
            Assert.Contains(backend.Accelerator.Name, e.Message);
            Assert.Contains("allocating 20.0 MiB", e.Message);
            Assert.Contains("tensors hold 1.0 MiB", e.Message);
            Assert.Contains("the 16.0 MiB the pool had cached were freed", e.Message);
            Assert.Equal(0, pool.CachedBytes);
            Assert.IsType<OutOfMemoryException>(e.InnerException);
        }
        finally
        {
            pool.AllocateBuffer = original;
        }
    }

    [Fact]
    public void DeviceMemoryCountsInUseThePeakAndWhatThePoolKeeps()
    {
        var device = Device.IlgpuCpuAt(9);
        var backend = (IlgpuBackend)device.Backend;
        device.ResetPeakMemory();
        long inUse = device.MemoryInUse, reserved = device.MemoryReserved;
        var a = backend.AllocateUninitialized(DType.Float32, 1 << 18);      // 1 MiB
        var b = backend.AllocateUninitialized(DType.Float32, 1 << 19);      // 2 MiB
        Assert.Equal(inUse + (3 << 20), device.MemoryInUse);
        a.Dispose();
        b.Dispose();
        Assert.Equal(inUse, device.MemoryInUse);
        Assert.Equal(inUse + (3 << 20), device.PeakMemoryInUse);             // the peak stays
        Assert.True(device.MemoryReserved >= reserved + (3 << 20));          // the pool keeps the buffers for reuse
        long kept = device.MemoryReserved;
        using (backend.AllocateUninitialized(DType.Float32, 1 << 19)) Assert.Equal(kept, device.MemoryReserved); // reused, not allocated
        device.ResetPeakMemory();
        Assert.Equal(device.MemoryInUse, device.PeakMemoryInUse);
        // Host devices hold no device memory.
        Assert.Equal(0, Device.Cpu.MemoryInUse);
        Assert.Equal(0, Device.Cpu.PeakMemoryInUse);
        Assert.Equal(0, Device.Cpu.MemoryReserved);
    }
}
