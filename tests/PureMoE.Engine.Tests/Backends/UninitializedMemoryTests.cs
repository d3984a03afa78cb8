using PureMoE.Backends;

namespace PureMoE.Engine.Tests.Backends;

/// <summary>
/// The test projects run with <see cref="UninitializedMemory.Poison"/> on (see PoisonUninitializedMemory.cs), so
/// every op that allocates its output uninitialized is tested against NaN-filled memory, not the OS's zero pages.
/// These tests show the switch is live on the host and on the ILGPU emulator, and that an op's output does not
/// keep any of it.
/// </summary>
[Collection("Ilgpu")]
public class UninitializedMemoryTests
{
    [Fact]
    public void Poison_is_on_for_the_tests()
    {
        Assert.True(UninitializedMemory.Poison);
    }

    [Fact]
    public void Host_uninitialized_arrays_start_as_NaN_or_min_value()
    {
        var f = (float[])CpuStorage.AllocateUninitialized(DType.Float32, 5000).Data;
        var d = (double[])CpuStorage.AllocateUninitialized(DType.Float64, 5000).Data;
        var l = (long[])CpuStorage.AllocateUninitialized(DType.Int64, 5000).Data;
        Assert.All(f, x => Assert.True(float.IsNaN(x)));
        Assert.All(d, x => Assert.True(double.IsNaN(x)));
        Assert.All(l, x => Assert.Equal(long.MinValue, x));
    }

    [Fact]
    public void Ilgpu_uninitialized_buffers_start_as_NaN_or_minus_one()
    {
        var backend = Device.IlgpuCpu.Backend;
        var f = new float[777];
        var l = new long[333];
        backend.Download(backend.AllocateUninitialized(DType.Float32, f.Length), 0, f, f.Length);
        backend.Download(backend.AllocateUninitialized(DType.Int64, l.Length), 0, l, l.Length);
        Assert.All(f, x => Assert.True(float.IsNaN(x)));
        Assert.All(l, x => Assert.Equal(-1L, x));
    }

    [Theory]
    [InlineData("cpu")]
    [InlineData("cpu-reference")]
    [InlineData("ilgpu-cpu")]
    public void Ops_with_uninitialized_outputs_write_every_element(string deviceName)
    {
        var device = Device.Parse(deviceName);
        var rng = new Rng(5);
        var x = Tensor.Randn(new Shape(3, 37, 19), rng, device: device);
        var w = Tensor.Randn(new Shape(19, 23), rng, device: device);
        var norm = Tensor.Ones(new Shape(23), device: device);
        x.RequiresGrad = w.RequiresGrad = norm.RequiresGrad = true;
        // MatMul, RmsNorm, Softmax, a unary and two binary kernels, Sum, and a strided Clone, forward and backward.
        var y = x.MatMul(w).RmsNorm(norm, 1e-5).Softmax().Exp()
            .Add(x.Sum(-1, keepDim: true))
            .Mul(x.Transpose(0, 1).Clone().Transpose(0, 1).Sum(-1, keepDim: true));
        y.Sum().Backward();
        foreach (var t in new[] { y, x.Grad!, w.Grad!, norm.Grad! })
        {
            float[] values = t.To(Device.Cpu).ToArray<float>();
            Assert.All(values, v => Assert.True(float.IsFinite(v), $"{deviceName}: a non-finite value in a {t.Shape} result"));
        }
    }
}
