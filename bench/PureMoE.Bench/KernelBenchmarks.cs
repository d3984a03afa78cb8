using BenchmarkDotNet.Attributes;

namespace PureMoE.Bench;

/// <summary>The fast CPU kernels (Device.Cpu) against the reference loops (Device.CpuReference), through the tensor ops.</summary>
[MemoryDiagnoser]
public class KernelBenchmarks
{
    private Tensor x = null!, w = null!, bias = null!;

    /// <summary>The device under test.</summary>
    [ParamsSource(nameof(Devices))]
    public Device Device { get; set; } = Device.Cpu;

    /// <summary>Both host devices.</summary>
    public static IEnumerable<Device> Devices => [Device.Cpu, Device.CpuReference];

    /// <summary>x [4096, 1024], weight and bias [1024].</summary>
    [GlobalSetup]
    public void Setup()
    {
        var rng = new Rng(42);
        x = Tensor.Randn(new Shape(4096, 1024), rng, device: Device);
        w = Tensor.Randn(new Shape(1024), rng, device: Device);
        bias = Tensor.Randn(new Shape(1024), rng, device: Device);
    }

    /// <summary>Row softmax of [4096, 1024].</summary>
    [Benchmark]
    public Tensor Softmax() { using (Tensor.NoGrad()) return x.Softmax(); }

    /// <summary>RMSNorm over rows of 1024.</summary>
    [Benchmark]
    public Tensor RmsNorm() { using (Tensor.NoGrad()) return x.RmsNorm(w, 1e-5); }

    /// <summary>SiLU of 4M elements.</summary>
    [Benchmark]
    public Tensor Silu() { using (Tensor.NoGrad()) return x.Silu(); }

    /// <summary>[4096, 1024] + [1024] (row broadcast).</summary>
    [Benchmark]
    public Tensor AddBroadcast() { using (Tensor.NoGrad()) return x.Add(bias); }

    /// <summary>Sum over the last axis.</summary>
    [Benchmark]
    public Tensor SumRows() { using (Tensor.NoGrad()) return x.Sum(-1); }

    /// <summary>Sum over the first axis (strided accumulation across rows).</summary>
    [Benchmark]
    public Tensor SumColumns() { using (Tensor.NoGrad()) return x.Sum(0); }
}
