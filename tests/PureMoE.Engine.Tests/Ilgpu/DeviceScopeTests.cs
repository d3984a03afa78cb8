using PureMoE.Backends.Ilgpu;
using PureMoE.Optim;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary><see cref="DeviceScope"/> on ILGPU's CPU accelerator: owned buffers go back to the pool, kept ones live.</summary>
[Collection("Ilgpu")]
public sealed class DeviceScopeTests
{
    private static IlgpuMemoryPool Pool => ((IlgpuBackend)Device.IlgpuCpu.Backend).Pool;

    [Fact]
    public void DisposeReturnsOwnedBuffersAndKeepsKeptTensors()
    {
        var dev = Device.IlgpuCpu;
        var a = Tensor.FromArray([1f, 2f, 3f, 4f], 2, 2).To(dev);           // outside any scope
        Finalizers.Settle();
        long leasedBefore = Pool.LeasedBytes;
        Tensor kept, dropped;
        using (var scope = DeviceScope.Begin())
        {
            Assert.Same(scope, DeviceScope.Current);
            dropped = a.Mul(a);
            var sum = dropped.Add(a);
            kept = scope.Keep(sum.MulScalar(2));
            Assert.Equal(2, scope.OwnedCount);                              // dropped and sum
            Assert.True(Pool.LeasedBytes > leasedBefore);
        }
        Assert.Null(DeviceScope.Current);
        Assert.Throws<ObjectDisposedException>(() => dropped.ToFloatArray());
        Assert.Equal(new[] { 4f, 12f, 24f, 40f }, kept.ToFloatArray());       // 2·(x² + x)
        Assert.Equal(new[] { 1f, 2f, 3f, 4f }, a.ToFloatArray());
    }

    [Fact]
    public void NestedKeepMovesToTheOuterScopeAndTrainingStepsReleaseEverything()
    {
        var dev = Device.IlgpuCpu;
        var w = Tensor.FromArray([0.5f, -1f, 2f], 3).To(dev);
        w.RequiresGrad = true;
        var x = Tensor.FromArray([1f, 2f, 3f], 3).To(dev);
        var opt = new AdamW([w], lr: 0.1);
        Tensor inner;
        using (var outer = DeviceScope.Begin())
        {
            using (var scope = DeviceScope.Begin())
                inner = scope.Keep(x.Add(x));
            Assert.Equal(1, outer.OwnedCount);
            Assert.Equal(new[] { 2f, 4f, 6f }, inner.ToFloatArray());
        }
        Assert.Throws<ObjectDisposedException>(() => inner.ToFloatArray());

        long leased = -1;
        for (int step = 0; step < 3; step++)
            using (DeviceScope.Begin())
            {
                opt.ZeroGrad();
                var loss = w.Mul(x).Sum().Square();
                loss.Backward();
                opt.Step();                                                 // optimizer state is not scope-owned
                if (step >= 1) Finalizers.Settle();
                if (step == 1) leased = Pool.LeasedBytes;
                if (step == 2) Assert.Equal(leased, Pool.LeasedBytes);      // a steady step allocates the same
            }
        Assert.Equal(3, opt.StepCount);
        Assert.All(w.ToFloatArray(), v => Assert.True(float.IsFinite(v)));
    }

    [Fact]
    public async Task BuffersAllocatedByTasksStartedInTheScopeAreFreedWithIt()
    {
        // The expert-parallel layer runs one task per device; what those tasks allocate must go back with the step.
        var x = Tensor.FromArray([1f, 2f, 3f, 4f], 4).To(Device.IlgpuCpu);
        Finalizers.Settle();
        long leasedBefore = Pool.LeasedBytes;
        Tensor fromTask, fromContinuation;
        using (var scope = DeviceScope.Begin())
        {
            fromTask = await Task.Run(() => x.Mul(x));
            fromContinuation = await Task.Run(async () =>
            {
                await Task.Yield();                                         // continues on another pool thread
                return x.Add(x);
            });
            Assert.Equal(2, scope.OwnedCount);
            Assert.Equal(new[] { 1f, 4f, 9f, 16f }, fromTask.ToFloatArray());
        }
        Assert.Equal(leasedBefore, Pool.LeasedBytes);
        Assert.Throws<ObjectDisposedException>(() => fromContinuation.ToFloatArray());
        Assert.Null(DeviceScope.Current);
    }
}
