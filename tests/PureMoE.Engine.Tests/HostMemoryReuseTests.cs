using FsCheck.Xunit;
using PureMoE.Backends;
using PureMoE.Backends.Cpu;
using PureMoE.Models;
using PureMoE.Optim;

namespace PureMoE.Engine.Tests;

/// <summary>
/// <see cref="DeviceScope.Begin(bool)"/> with host-memory reuse: the scope owns the large host arrays made in it,
/// hands them to <see cref="HostArrayPool"/> when it ends and the next scope takes them again. A training loop gives
/// the same bits with and without reuse, and a tensor used after its scope fails loudly.
/// </summary>
public sealed class HostMemoryReuseTests
{
    // Each test its own pool (xunit makes a new instance per test): what other tests' scopes do cannot show here.
    private readonly HostArrayPool _pool = new();

    private const int Large = HostArrayPool.MinLength + 904; // pooled
    private const int Small = 100;                            // left to the garbage collector

    [Fact]
    public void The_next_scope_reuses_the_arrays_of_the_last_one()
    {
        Array first;
        using (DeviceScope.Begin(_pool))
        {
            first = Host(Tensor.Zeros(new Shape(Large)));
        }
        using (DeviceScope.Begin(_pool))
        {
            Assert.Same(first, Host(Tensor.Zeros(new Shape(Large))));
            Assert.NotSame(first, Host(Tensor.Zeros(new Shape(Large)))); // taken already: a new one
        }
    }

    [Fact]
    public void A_request_of_another_length_in_the_same_size_class_reuses_the_shortest_array_that_fits()
    {
        // New arrays get headroom to the next 1/16 of their octave: 5,000 → 5,120, 8,300 → 8,704, 9,000 → 9,216.
        // 4,990 shares 5,000's size class (5,120); 8,200, 8,300, 8,800, 9,000 and 9,900 share one (10,240).
        Array a5000, a8300, a9000;
        using (DeviceScope.Begin(_pool))
        {
            a5000 = Host(Tensor.Full(new Shape(5000), 7.0));
            a9000 = Host(Tensor.Full(new Shape(9000), 7.0));
            a8300 = Host(Tensor.Full(new Shape(8300), 7.0));
        }
        Assert.Equal([5120, 9216, 8704], new[] { a5000.Length, a9000.Length, a8300.Length });
        using (DeviceScope.Begin(_pool))
        {
            var shorter = Tensor.Zeros(new Shape(4990));
            Assert.Same(a5000, Host(shorter));
            Assert.Same(a8300, Host(Tensor.Zeros(new Shape(8200))));   // of 8,704 and 9,216 free, the shorter
            var longer = Tensor.Zeros(new Shape(10, 880));
            Assert.Same(a9000, Host(longer));
            Assert.Equal(4990, shorter.Storage.Length);
            Assert.Equal(8800, longer.Storage.Length);
            Assert.All(shorter.ToArray<float>(), v => Assert.Equal(0f, v));
            Assert.All(longer.Add(longer).ToArray<float>(), v => Assert.Equal(0f, v));
            // Tests poison the elements past a storage's length: a kernel that ran to the array's end would read NaN.
            Assert.All(((float[])a5000)[4990..], v => Assert.True(float.IsNaN(v)));
            // Nothing free in the class: a new array.
            Assert.Equal(10240, Host(Tensor.Zeros(new Shape(9900))).Length);
            // Another class takes a new array.
            Assert.Equal(5376, Host(Tensor.Zeros(new Shape(5121))).Length);
        }
    }

    [Fact]
    public void A_class_whose_free_arrays_are_all_too_short_gets_a_new_array_spanning_the_class()
    {
        // 8,300 and 8,800 share the class 10,240. A first request gets a little headroom (8,300 → 8,704); when the
        // class's free arrays are all too short the sizes there vary, and the new array spans the class.
        Array first;
        using (DeviceScope.Begin(_pool))
        {
            first = Host(Tensor.Zeros(new Shape(8300)));
        }
        Assert.Equal(8704, first.Length);
        using (DeviceScope.Begin(_pool))
        {
            var grown = Host(Tensor.Zeros(new Shape(8800)));
            Assert.Equal(10240, grown.Length);
            Assert.Same(first, Host(Tensor.Zeros(new Shape(8300))));
        }
    }

    [Property(MaxTest = 60)]
    public void Tensors_alive_in_one_scope_never_share_an_array_and_keep_their_own_values(int seed)
    {
        // Scopes in a row, each making tensors of lengths near a few sizes (so they share size classes, and some
        // fall below the pool's minimum) in all three dtypes, zeroed or filled: every array a scope hands out is
        // its own, a zeroed tensor reads zero however used its array was, and nothing writes past a tensor's length
        // into another's.
        var rng = new Random(seed);
        int[] near = [HostArrayPool.MinLength, 5000, 9000, 20000];
        DType[] dtypes = [DType.Float32, DType.Float64, DType.Int64];
        for (int scope = 0; scope < 4; scope++)
        {
            using (DeviceScope.Begin(_pool))
            {
                var made = new List<(Tensor Tensor, double Value)>();
                for (int i = rng.Next(1, 12); i > 0; i--)
                {
                    var shape = new Shape(near[rng.Next(near.Length)] + rng.Next(-300, 300));
                    var dtype = dtypes[rng.Next(dtypes.Length)];
                    double value = rng.Next(2) == 0 ? 0 : 1 + made.Count + 100 * scope;
                    made.Add((value == 0 ? Tensor.Zeros(shape, dtype) : Tensor.Full(shape, value, dtype), value));
                }
                var arrays = made.Where(m => m.Tensor.Numel >= HostArrayPool.MinLength).Select(m => Host(m.Tensor)).ToList();
                Assert.Equal(arrays.Count, arrays.Distinct(ReferenceEqualityComparer.Instance).Count());
                foreach (var (t, value) in made)
                {
                    Assert.Equal(t.Numel, t.Storage.Length);
                    Assert.All(t.To(DType.Float64).ToArray<double>(), v => Assert.Equal(value, v));
                }
            }
        }
    }

    [Fact]
    public void Size_classes_round_up_by_at_most_a_quarter_and_new_arrays_by_a_sixteenth()
    {
        Assert.Equal([1L, 2, 3, 4, 5, 6, 7, 8, 10, 4096, 5120, 5120, 6144], new long[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 4096, 4097, 5120, 5121 }.Select(n => SizeClasses.RoundUp(n)));
        for (long n = 1; n < 200_000; n += 1 + n / 64)
        {
            long c = SizeClasses.RoundUp(n);
            Assert.InRange(c, n, n + n / 4);
            Assert.Equal(c, SizeClasses.RoundUp(c));
            Assert.True(SizeClasses.RoundUp(n + 1) >= c, $"classes grow with the request ({n})");
        }
        // A new host array's headroom: a sixteenth of the octave, never past the request's class.
        for (int n = HostArrayPool.MinLength; n < 200_000; n += 1 + n / 64)
        {
            int capacity = HostArrayPool.Capacity(n);
            Assert.InRange(capacity, n, n + n / 16);
            Assert.Equal(SizeClasses.RoundUp(n), SizeClasses.RoundUp(capacity));
        }
        // Past the largest array .NET allows the pool takes the length itself.
        Assert.Equal(Array.MaxLength, HostArrayPool.Capacity(Array.MaxLength));
        Assert.Equal(5120, HostArrayPool.Capacity(5000));
    }

    [Fact]
    public void Reused_arrays_come_back_zeroed_for_zeros_and_poisoned_for_empty()
    {
        using (DeviceScope.Begin(_pool))
        {
            Tensor.Full(new Shape(Large), 7.0);
            Tensor.Full(new Shape(Large), 7.0);
        }
        using (DeviceScope.Begin(_pool))
        {
            Assert.All(Tensor.Zeros(new Shape(Large)).ToArray<float>(), v => Assert.Equal(0f, v));
            Assert.All(Tensor.Empty(new Shape(Large), DType.Float32, Device.Cpu).ToArray<float>(), v => Assert.True(float.IsNaN(v)));
        }
    }

    [Fact]
    public void A_tensor_used_after_its_reusing_scope_throws_and_a_kept_one_lives()
    {
        Tensor dropped, kept, small;
        using (var scope = DeviceScope.Begin(_pool))
        {
            dropped = Tensor.Full(new Shape(Large), 2.0);
            kept = scope.Keep(Tensor.Full(new Shape(Large), 3.0));
            small = Tensor.Full(new Shape(Small), 4.0);
        }
        var e = Assert.Throws<ObjectDisposedException>(() => dropped.Add(dropped));
        Assert.Contains("Keep", e.Message);
        Assert.All(kept.ToArray<float>(), v => Assert.Equal(3f, v));
        Assert.All(small.ToArray<float>(), v => Assert.Equal(4f, v));
    }

    [Fact]
    public void Plain_scopes_and_suspended_allocations_do_not_track_host_arrays()
    {
        Tensor plain, suspended;
        using (DeviceScope.Begin())
        {
            plain = Tensor.Full(new Shape(Large), 5.0);
        }
        using (DeviceScope.Begin(_pool))
        using (DeviceScope.Suspend())
        {
            suspended = Tensor.Full(new Shape(Large), 6.0);
        }
        Assert.All(plain.ToArray<float>(), v => Assert.Equal(5f, v));
        Assert.All(suspended.ToArray<float>(), v => Assert.Equal(6f, v));
    }

    [Fact]
    public void A_scope_nested_in_a_reusing_scope_reuses_too()
    {
        using var outer = DeviceScope.Begin(reuseHostMemory: true);
        using var inner = DeviceScope.Begin();
        Assert.True(inner.ReusesHostMemory);
        Tensor.Zeros(new Shape(Large));
        Assert.Equal(1, inner.OwnedCount);
    }

    [Fact]
    public void Training_steps_give_the_same_bits_with_and_without_reuse()
    {
        var (lossesPlain, weightsPlain) = Train(null);
        var (lossesReused, weightsReused) = Train(_pool);
        Assert.True(_pool.Count > 10, "the reusing run left its last step's arrays in the pool");
        Assert.Equal(lossesPlain, lossesReused);
        Assert.Equal(weightsPlain.Length, weightsReused.Length);
        for (int i = 0; i < weightsPlain.Length; i++) Assert.Equal(weightsPlain[i], weightsReused[i]);
    }

    [Fact]
    public void Relu_routing_whose_expert_blocks_change_size_every_step_gives_the_same_bits_with_reuse()
    {
        var (lossesPlain, weightsPlain, pairsPlain) = TrainRelu(null);
        var (lossesReused, weightsReused, pairsReused) = TrainRelu(_pool);
        Assert.True(pairsPlain.Distinct().Count() > 3, $"the routed pairs vary from step to step: {string.Join(", ", pairsPlain)}");
        Assert.Equal(pairsPlain, pairsReused);
        Assert.Equal(lossesPlain, lossesReused);
        for (int i = 0; i < weightsPlain.Length; i++) Assert.Equal(weightsPlain[i], weightsReused[i]);
    }

    /// <summary>
    /// Eight AdamW steps of one MoE layer under ReMoE's ReLU router (λ adapting), one scope per step: the losses, the
    /// final weights and each step's routed (token, expert) pairs, which set the size of every expert-block array.
    /// </summary>
    private static (double[] Losses, float[][] Weights, int[] Pairs) TrainRelu(HostArrayPool? pool)
    {
        const int d = 32, tokens = 256, steps = 8;
        var rng = new Rng(21);
        var router = new PureMoE.Moe.Routing.ReluRouter(8, new PureMoE.Moe.Routing.ReluRouterOptions { K = 2 });
        var layer = new PureMoE.Moe.MoeLayer(d, 64, router, rng);
        var optimizer = new AdamW(layer.Parameters(), lr: 3e-2);
        var losses = new double[steps];
        var pairs = new int[steps];
        for (int step = 0; step < steps; step++)
        {
            using (DeviceScope.Begin(pool))
            {
                var x = Tensor.Randn(new Shape(tokens, d), rng);
                var loss = layer.Forward(x).Sub(x.Tanh()).Square().Mean().Add(layer.LastRegularizationLoss!);
                optimizer.ZeroGrad();
                loss.Backward();
                optimizer.Step();
                losses[step] = loss.Item();
                pairs[step] = layer.LastPlan!.Weights.ToArray<float>().Count(w => w > 0);
                router.AfterOptimizerStep([layer.LastPlan!]);
                optimizer.ZeroGrad();
            }
        }
        return (losses, layer.Parameters().Select(p => p.ToArray<float>()).ToArray(), pairs);
    }

    /// <summary>Five AdamW steps of a tiny Mixtral model, one scope per step; the losses and every final weight.</summary>
    private static (double[] Losses, float[][] Weights) Train(HostArrayPool? pool)
    {
        var config = new MixtralConfig
        {
            VocabSize = 256, HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 2,
            NumKeyValueHeads = 1, NumLocalExperts = 4, NumExpertsPerTok = 2, MaxPositionEmbeddings = 64,
        };
        var model = new MixtralForCausalLM(config, new Rng(11));
        var optimizer = new AdamW(model.Parameters(), lr: 1e-2);
        var rng = new Rng(12);
        var losses = new double[5];
        for (int step = 0; step < losses.Length; step++)
        {
            var ids = new long[4 * 33];
            for (int i = 0; i < ids.Length; i++) ids[i] = (long)(rng.NextDouble() * 256);
            using (DeviceScope.Begin(pool))
            {
                model.ZeroGrad();
                var loss = model.Loss(Tensor.FromArray(ids, 4, 33));
                loss.Backward();
                optimizer.Step();
                losses[step] = loss.Item();
                model.ZeroGrad();
            }
        }
        return (losses, model.Parameters().Select(p => p.ToArray<float>()).ToArray());
    }

    private static Array Host(Tensor t) => ((CpuStorage)t.Storage).Data;
}
