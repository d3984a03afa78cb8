using FsCheck.Xunit;
using PureMoE.Backends.Cpu;

namespace PureMoE.Engine.Tests;

/// <summary>
/// The backward pass recycles a consumed gradient's host array (<c>GradientRecycler</c>) inside a scope that reuses
/// host memory: a pass holds the gradients in flight, not every gradient it made; the numbers are the same bits as
/// without a scope; gradients that share a storage, a leaf's adopted gradient and a custom function's kept gradient
/// are never recycled while still needed. The test project poisons recycled arrays with NaN, so a gradient read
/// after its array went back would show.
/// </summary>
public sealed class GradientRecyclingTests
{
    // Each test its own pool (xunit makes a new instance per test): what other tests' scopes do cannot show here.
    private readonly HostArrayPool _pool = new();

    private const int Side = 80; // 6,400 elements: pooled

    [Fact]
    public void A_chain_of_ops_holds_two_gradients_in_flight_not_one_per_op()
    {
        const int ops = 16;
        var x = Tensor.Full(new Shape(Side, Side), 0.5);
        x.RequiresGrad = true;
        for (int round = 0; round < 2; round++) // the second round's arrays are what one such pass takes
        {
            using (DeviceScope.Begin(_pool))
            {
                x.ZeroGrad();
                var y = x;
                for (int i = 0; i < ops; i++) y = y.MulScalar(1.25);
                y.Sum().Backward();
                Assert.All(x.Grad!.ToArray<float>(), g => Assert.Equal(MathF.Pow(1.25f, ops), g));
            }
        }
        // 16 forward outputs, and two gradient arrays used in turn (one of them became x.Grad); every op's gradient
        // held to the step's end would make 16 more.
        Assert.Equal((ops + 2) * HostArrayPool.Capacity(Side * Side) * 4L, _pool.LastScopeBytes);
    }

    [Fact]
    public void A_nodes_temporaries_go_back_when_its_backward_returns()
    {
        // y ← y / c, 16 times, c a leaf: each Div backward makes g·y and g·y / c as temporaries on the way to −g·y / c²
        // (c's gradient, summed over the 16 nodes). Held to the step's end they would be 32 arrays more.
        const int ops = 16;
        var x = Tensor.Full(new Shape(Side, Side), 0.5);
        var c = Tensor.Full(new Shape(Side, Side), 1.25);
        x.RequiresGrad = c.RequiresGrad = true;
        float[] dx = [], dc = [];
        for (int round = 0; round < 2; round++)
        {
            using (DeviceScope.Begin(_pool))
            {
                x.ZeroGrad();
                c.ZeroGrad();
                var y = x;
                for (int i = 0; i < ops; i++) y = y.Div(c);
                y.Sum().Backward();
                dx = x.Grad!.ToArray<float>();
                dc = c.Grad!.ToArray<float>();
            }
        }
        // y = x / c¹⁶: dy/dx = c⁻¹⁶, dy/dc = −16·x·c⁻¹⁷.
        Assert.All(dx, g => Assert.Equal(MathF.Pow(1.25f, -ops), g, 1e-6f));
        Assert.All(dc, g => Assert.Equal(-ops * 0.5f * MathF.Pow(1.25f, -ops - 1), g, 1e-6f));
        long array = HostArrayPool.Capacity(Side * Side) * 4L;
        Assert.InRange(_pool.LastScopeBytes / array, ops + 2, ops + 8);
    }

    [Fact]
    public void A_backward_pass_nested_in_a_nodes_backward_keeps_what_it_made()
    {
        // A node whose backward runs a backward pass of its own (as the expert-parallel layer does per rank): the
        // gradient it seeds that pass with, made in its backward and not returned, ends up as w.Grad (a fresh
        // gradient is adopted, not copied) and must not be taken for the node's temporary.
        var x = Tensor.Full(new Shape(Side, Side), 1.0);
        var w = Tensor.Full(new Shape(Side, Side), 1.0);
        x.RequiresGrad = w.RequiresGrad = true;
        using (DeviceScope.Begin(_pool))
        {
            var y = Tensor.Record("NestedBackward", x.Detach().MulScalar(1), [x], g =>
            {
                w.Backward(Tensor.Full(new Shape(Side, Side), 3.0).AsFreshGradient());
                return [g.MulScalar(2)];
            });
            y.MulScalar(1).Sum().Backward();
            Assert.All(w.Grad!.ToArray<float>(), v => Assert.Equal(3f, v));
            Assert.All(x.Grad!.ToArray<float>(), v => Assert.Equal(2f, v));
        }
    }

    [Fact]
    public void A_swiglus_saved_activations_go_back_after_its_backward_with_the_same_bits()
    {
        // GroupedSwiGlu saves h1, h3 and silu(h1)·h3 ([rows, ff] each) for its backward alone.
        var (expected, _) = SwiGluGradients(null);
        var (recycled, node) = SwiGluGradients(_pool);
        Assert.Equal(expected, recycled);
        Assert.True(node.Spent, "the saved activations went back after the backward");
    }

    [Fact]
    public void A_second_backward_through_an_op_whose_saved_buffers_went_back_says_so()
    {
        using (DeviceScope.Begin(_pool))
        {
            var (x, w1, w3, w2, sizes) = SwiGluInputs();
            var y = Tensor.GroupedSwiGlu(x, w1, w3, w2, sizes);
            var loss = y.Square().Sum();
            loss.Backward();
            var e = Assert.Throws<InvalidOperationException>(() => loss.Backward());
            Assert.Contains("GroupedSwiGlu backward", e.Message);
            Assert.Contains("one backward pass per forward", e.Message);
        }
        // Outside a reusing scope nothing is given back, and a second pass accumulates as before.
        var (x2, a, b, c, s2) = SwiGluInputs();
        var loss2 = Tensor.GroupedSwiGlu(x2, a, b, c, s2).Square().Sum();
        loss2.Backward();
        var once = x2.Grad!.ToArray<float>();
        loss2.Backward();
        Assert.Equal(once.Select(g => 2 * g), x2.Grad!.ToArray<float>());
    }

    [Fact]
    public void Without_recording_an_ops_saved_and_temporary_buffers_go_back_at_once()
    {
        // Two attention calls under NoGrad: each call's scores go back after the softmax and its probabilities
        // after the output (nothing will run its backward), so the second call takes the first's two arrays:
        // four arrays in all (scores, P, and two outputs) instead of six.
        var rng = new Rng(5);
        Tensor Input() => Tensor.Randn(new Shape(1, 2, 64, 32), rng);
        var (q, k, v) = (Input(), Input(), Input());
        float[] first, second;
        using (Tensor.NoGrad())
        using (DeviceScope.Begin(_pool))
        {
            first = Tensor.CausalAttention(q, k, v).ToArray<float>();
            second = Tensor.CausalAttention(q, k, v).ToArray<float>();
        }
        Assert.Equal(first, second);
        Assert.Equal(4, _pool.Count);
        Assert.Equal(first, Tensor.CausalAttention(q, k, v).ToArray<float>()); // and the same numbers as without a scope
    }

    private (float[] Gradients, Autograd.Node Node) SwiGluGradients(HostArrayPool? pool)
    {
        using var scope = DeviceScope.Begin(pool);
        var (x, w1, w3, w2, sizes) = SwiGluInputs();
        var y = Tensor.GroupedSwiGlu(x, w1, w3, w2, sizes);
        // Work after the op's backward that takes the returned arrays, so a stale read would show.
        y.Tanh().MulScalar(2).Square().Sum().Backward();
        float[] grads = [.. x.Grad!.ToArray<float>(), .. w1.Concat(w3).Concat(w2).SelectMany(w => w.Grad!.ToArray<float>())];
        return (grads, y.GradFn!);
    }

    private static (Tensor X, Tensor[] W1, Tensor[] W3, Tensor[] W2, int[] Sizes) SwiGluInputs()
    {
        const int d = 32, ff = 96, groups = 3;
        int[] sizes = [70, 0, 90];
        var rng = new Rng(17);
        Tensor Leaf(params int[] shape)
        {
            var t = Tensor.Randn(new Shape(shape), rng, std: 0.2);
            t.RequiresGrad = true;
            return t;
        }
        var x = Leaf(sizes.Sum(), d);
        Tensor[] Weights(int o, int i) => [.. Enumerable.Range(0, groups).Select(_ => Leaf(o, i))];
        return (x, Weights(ff, d), Weights(ff, d), Weights(d, ff), sizes);
    }

    [Property(MaxTest = 40)]
    public void Random_graphs_with_shared_and_viewed_gradients_give_the_same_bits_with_recycling(int seed)
    {
        // A random graph over [80, 80] tensors: fan-out (a tensor used by several later ops, so its gradients add up),
        // an op using one tensor twice (both inputs get one gradient), views (transposes: a gradient that views
        // another's storage) and elementwise ops. The gradient of the input must not depend on recycling.
        var expected = Gradient(seed, scope: false);
        for (int round = 0; round < 2; round++) // the second round takes the first one's arrays again
            Assert.Equal(expected, Gradient(seed, scope: true));
    }

    private float[] Gradient(int seed, bool scope)
    {
        var rng = new Random(seed);
        var x = Tensor.Randn(new Shape(Side, Side), new Rng((ulong)(uint)seed));
        x.RequiresGrad = true;
        using var s = scope ? DeviceScope.Begin(_pool) : null;
        var made = new List<Tensor> { x };
        for (int i = rng.Next(3, 14); i > 0; i--)
        {
            var a = made[rng.Next(made.Count)];
            var b = made[rng.Next(made.Count)];
            made.Add(rng.Next(7) switch
            {
                0 => a.Add(b),
                1 => a.Mul(b.Tanh()),
                2 => a.Add(a),
                3 => a.Transpose(0, 1),
                4 => a.Transpose(0, 1).MulScalar(0.5).Transpose(0, 1),
                5 => a.Reshape(Side * Side).Reshape(Side, Side),
                _ => a.Tanh().Sub(b.MulScalar(0.25)),
            });
        }
        // The loss reads the last few tensors, so several gradients are in flight at once.
        var loss = made[^1].Sum();
        for (int i = 2; i <= Math.Min(4, made.Count); i++) loss = loss.Add(made[^i].Square().Mean());
        loss.Backward();
        return x.Grad!.ToArray<float>();
    }

    [Fact]
    public void A_custom_function_may_keep_its_output_gradient_for_a_later_node()
    {
        // The expert-parallel layer's pattern: each output's backward keeps its gradient for one hub node, whose
        // backward runs later and reads them all. The kept gradient (made by MulScalar's backward, so a candidate)
        // must not be recycled when the output's backward returns.
        var x = Tensor.Full(new Shape(Side, Side), 1.0);
        x.RequiresGrad = true;
        for (int round = 0; round < 2; round++)
        {
            using (DeviceScope.Begin(_pool))
            {
                x.ZeroGrad();
                Tensor? pending = null;
                var hub = Tensor.Function("hub", Tensor.Zeros(new Shape(1)), [x], _ => [pending!.MulScalar(3)]);
                Tensor output;
                using (Tensor.NoGrad()) output = x.MulScalar(1);
                output = Tensor.Function("output", output, [hub], g =>
                {
                    pending = g;
                    return [Tensor.ZerosLike(hub)];
                });
                // Work between the two backward calls that would take a recycled array and overwrite it.
                output.MulScalar(2).Tanh().MulScalar(0.5).Sum().Backward();
                float dTanh = 1 - MathF.Tanh(2f) * MathF.Tanh(2f);
                Assert.All(x.Grad!.ToArray<float>(), g => Assert.Equal(3 * 2 * 0.5f * dTanh, g, 6));
            }
        }
    }

    [Fact]
    public void The_arrays_a_scope_used_wait_for_the_next_and_go_if_it_takes_none()
    {
        var early = new float[HostArrayPool.Capacity(Side * Side)];
        var atEnd = new float[HostArrayPool.Capacity(2 * Side * Side)];
        _pool.Return(early);          // a consumed gradient, given back during the scope
        _pool.ReturnAll([atEnd]);     // the scope ends: both are what it used
        Assert.Equal(2, _pool.Count);
        Assert.Equal(4L * (early.Length + atEnd.Length), _pool.LastScopeBytes);
        for (int i = 0; i <= HostArrayPool.MaxIdleScopes; i++) _pool.ReturnAll([]); // scopes that take neither
        Assert.Equal(0, _pool.Count);
    }

    [Fact]
    public void Dropping_enough_arrays_asks_for_one_full_collection()
    {
        int length = (int)(HostArrayPool.CollectAfterDroppedBytes / 4 / 8); // an eighth of the threshold
        int before = _pool.Collections;
        // Just under the threshold: dropped, no collection yet.
        _pool.ReturnAll(Enumerable.Range(0, 7).Select(_ => (Array)new float[length]));
        for (int i = 0; i <= HostArrayPool.MaxIdleScopes; i++) _pool.ReturnAll([]);
        Assert.Equal(before, _pool.Collections);
        // One more array's worth reaches it: one collection, and the count starts again.
        _pool.ReturnAll([new float[length]]);
        for (int i = 0; i <= HostArrayPool.MaxIdleScopes; i++) _pool.ReturnAll([]);
        Assert.Equal(before + 1, _pool.Collections);
        _pool.ReturnAll([new float[length]]);
        for (int i = 0; i <= HostArrayPool.MaxIdleScopes; i++) _pool.ReturnAll([]);
        Assert.Equal(before + 1, _pool.Collections);
    }
}
