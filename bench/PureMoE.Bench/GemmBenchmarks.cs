using BenchmarkDotNet.Attributes;
using PureMoE.Backends.Cpu;

namespace PureMoE.Bench;

/// <summary>BenchmarkDotNet suite for <see cref="Sgemm.Multiply"/> on square float32 matrices.</summary>
[MemoryDiagnoser]
public class GemmBenchmarks
{
    private float[] a = [];
    private float[] b = [];
    private float[] c = [];

    /// <summary>Matrix size (m = n = k).</summary>
    [Params(256, 1024)]
    public int N { get; set; }

    /// <summary>Allocates random operands.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(42);
        a = new float[N * N];
        b = new float[N * N];
        c = new float[N * N];
        for (int i = 0; i < a.Length; i++)
        {
            a[i] = (float)rng.NextDouble();
            b[i] = (float)rng.NextDouble();
        }
    }

    /// <summary>C = A·B.</summary>
    [Benchmark]
    public void Sgemm_NN() => Sgemm.Multiply(false, false, N, N, N, 1f, a, 0, N, b, 0, N, 0f, c, 0, N);

    /// <summary>C = A·Bᵀ (the layout of a linear layer's forward pass).</summary>
    [Benchmark]
    public void Sgemm_NT() => Sgemm.Multiply(false, true, N, N, N, 1f, a, 0, N, b, 0, N, 0f, c, 0, N);
}
