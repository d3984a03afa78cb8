using PureMoE.Backends;
using PureMoE.Backends.Cpu;
using PureMoE.Backends.Ilgpu;
using PureMoE.Engine.Tests.Backends;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>ArgSort on ILGPU's CPU accelerator (the GPU emulator) against the CPU backend.</summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class IlgpuCpuArgSortTests : IlgpuArgSortTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.IlgpuCpu;
}

/// <summary>The same ArgSort tests on CUDA device 0; skipped where there is none.</summary>
[Trait("Device", "Cuda")]
[Collection("Ilgpu")]
public sealed class CudaArgSortTests : IlgpuArgSortTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.Cuda;
}

/// <summary>
/// ArgSort against <see cref="Device.Cpu"/>'s backend, index for index, on each path (rank counting, the radix sort,
/// and the backend's own choice, <see cref="IlgpuBackend.UsesRankArgSort"/>). The rows are full of ties (values
/// drawn from a few levels) and of the values an order-preserving bit key can get wrong: ±0 (equal, so ties),
/// NaNs of either sign and several payloads (all equal, all largest), ±∞, denormals; int64 rows hold negative and
/// extreme values.
/// </summary>
public abstract class IlgpuArgSortTests : IlgpuTestBase
{
    private static readonly IBackend Cpu = K.Cpu;

    /// <summary>The paths: forced rank counting, forced radix sort, the backend's choice.</summary>
    private static readonly bool?[] Paths = [true, false, null];

    private static readonly float[] FloatLevels =
    [
        0f, -0f, 1f, -1f, 2.5f, -2.5f, 1e30f, -1e30f,
        float.PositiveInfinity, float.NegativeInfinity,
        float.Epsilon, -float.Epsilon, 1e-40f, -1e-40f,                         // denormals
        float.NaN, -float.NaN,
        BitConverter.UInt32BitsToSingle(0x7F80_0001u),                            // signalling payload
        BitConverter.UInt32BitsToSingle(0xFFC1_2345u),                            // negative, other payload
        BitConverter.UInt32BitsToSingle(0x7FFF_FFFFu),
    ];

    private static readonly long[] LongLevels =
    [
        long.MinValue, long.MinValue + 1, -(1L << 40), -5, -1, 0, 1, 7, 1L << 32, (1L << 32) + 1, long.MaxValue - 1, long.MaxValue,
    ];

    /// <summary>
    /// <paramref name="count"/> float32s: three in four drawn from <see cref="FloatLevels"/> (every value repeats),
    /// the rest uniform in [−3, 3).
    /// </summary>
    private static float[] Floats(int count, int seed)
    {
        var rng = new Random(seed);
        var a = new float[count];
        for (int i = 0; i < count; i++)
            a[i] = rng.Next(4) == 0 ? (float)(rng.NextDouble() * 6 - 3) : FloatLevels[rng.Next(FloatLevels.Length)];
        return a;
    }

    /// <summary><paramref name="count"/> int64s: three in four drawn from <see cref="LongLevels"/>, the rest any 64-bit value.</summary>
    private static long[] Longs(int count, int seed)
    {
        var rng = new Random(seed);
        var a = new long[count];
        for (int i = 0; i < count; i++)
            a[i] = rng.Next(4) == 0 ? rng.NextInt64(long.MinValue, long.MaxValue) : LongLevels[rng.Next(LongLevels.Length)];
        return a;
    }

    private static long[] CpuArgSort(Array x, int rows, int n, bool descending)
    {
        var e = K.S(new long[rows * n]);
        Cpu.ArgSort(K.S(x), e, rows, n, descending);
        return ((CpuStorage)e).As<long>();
    }

    /// <summary>Runs <paramref name="body"/> with ArgSort forced onto a path (null: the backend's choice).</summary>
    private T OnPath<T>(bool? ranks, Func<T> body)
    {
        B.ForceRankArgSort = ranks;
        try { return body(); }
        finally { B.ForceRankArgSort = null; }
    }

    private void CheckMatchesCpu(Array x, int rows, int n, string what)
    {
        var dx = Up(x);
        foreach (bool descending in new[] { false, true })
        {
            var expected = CpuArgSort(x, rows, n, descending);
            foreach (var ranks in Paths)
            {
                var actual = OnPath(ranks, () =>
                {
                    var g = B.Allocate(DType.Int64, rows * n);
                    B.ArgSort(dx, g, rows, n, descending);
                    return DownL(g);
                });
                string path = ranks switch { true => "ranks", false => "radix", null => "auto" };
                Assert.True(expected.SequenceEqual(actual), $"{what} rows={rows} n={n} descending={descending} {path}");
            }
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 1)]
    [InlineData(1, 2)]
    [InlineData(4, 2)]
    [InlineData(1, 65)]
    [InlineData(5, 65)]
    [InlineData(2, 1000)]
    [InlineData(1, 4097)]
    public void MatchesCpuIndexForIndex(int rows, int n)
    {
        int seed = rows * 7919 + n;
        CheckMatchesCpu(Floats(rows * n, seed), rows, n, "float32");
        CheckMatchesCpu(Longs(rows * n, seed + 1), rows, n, "int64");
    }

    /// <summary>
    /// Sorts long enough for the radix sort to span many groups and, on a GPU, several passes of its grid (ILGPU's
    /// GPU radix sort is other code than the CPU accelerator's): the radix and auto paths only, as rank counting is
    /// quadratic in the row length. On CUDA the rows are 10× longer (the emulator would take minutes).
    /// </summary>
    [Theory]
    [InlineData(1, 20_003)]
    [InlineData(3, 7_001)]
    public void LongRowsSortLikeTheCpu(int rows, int n)
    {
        if (Kind == DeviceKind.Cuda) n = 10 * n - 3;
        foreach (var (x, what) in new (Array, string)[] { (Floats(rows * n, n), "float32"), (Longs(rows * n, n + 1), "int64") })
        {
            var dx = Up(x);
            foreach (bool descending in new[] { false, true })
            {
                var expected = CpuArgSort(x, rows, n, descending);
                foreach (bool? ranks in new bool?[] { false, null })
                {
                    var actual = OnPath(ranks, () =>
                    {
                        var g = B.Allocate(DType.Int64, rows * n);
                        B.ArgSort(dx, g, rows, n, descending);
                        return DownL(g);
                    });
                    Assert.True(expected.SequenceEqual(actual), $"{what} rows={rows} n={n} descending={descending} {(ranks is null ? "auto" : "radix")}");
                }
            }
        }
    }

    [Fact]
    public void AllNaNsAndBothZerosAreTies()
    {
        // NaNs of both signs and many payloads are one value; −0 and +0 are another: indices stay in order.
        uint[] nanBits = [0x7FC0_0000u, 0xFFC0_0000u, 0x7F80_0001u, 0xFF80_0001u, 0x7FFF_FFFFu, 0xFFFF_FFFFu, 0x7FA0_0000u];
        var x = Enumerable.Range(0, 70).Select(i => i % 3 == 0 ? (i % 2 == 0 ? 0f : -0f) : BitConverter.UInt32BitsToSingle(nanBits[i % nanBits.Length])).ToArray();
        CheckMatchesCpu(x, 1, 70, "NaNs and zeros");
        CheckMatchesCpu(x, 2, 35, "NaNs and zeros");
    }

    [Fact]
    public void ManyRowsSortRowsOnAll32Bits()
    {
        // 2¹⁶ + 1 rows: row numbers no longer fit the 16-bit row sort, so the radix path runs the 32-bit one.
        // (One direction: the emulator takes a while over 2¹⁷ elements; descending only complements the keys.)
        int rows = (1 << 16) + 1, n = 2;
        var x = Floats(rows * n, 5);
        var g = B.Allocate(DType.Int64, rows * n);
        OnPath(false, () => { B.ArgSort(Up(x), g, rows, n, descending: true); return 0; });
        Assert.True(CpuArgSort(x, rows, n, descending: true).SequenceEqual(DownL(g)));
    }

    [Fact]
    public void PathRuleKeepsRankCountingForShortRowsOnly()
    {
        Assert.True(B.UsesRankArgSort(100_000, 64));   // routing: experts per token
        Assert.True(B.UsesRankArgSort(16, 1024));      // 2²⁴ comparisons in rows of 1024: one launch still wins
        Assert.False(B.UsesRankArgSort(17, 1024));
        Assert.False(B.UsesRankArgSort(1, 2048));      // an H200: 1 × 4096 took 0.62 ms by ranks, 0.40 by radix
        Assert.False(B.UsesRankArgSort(1, 4096));
        Assert.False(B.UsesRankArgSort(1, 100_000));
    }

    [Fact]
    public void RadixPathReadsNothingBackAndReturnsItsBuffer()
    {
        int rows = 3, n = 700;
        var dx = Up(Floats(rows * n, 6));
        var g = B.Allocate(DType.Int64, rows * n);
        OnPath(false, () =>
        {
            B.ArgSort(dx, g, rows, n, false); // warm: kernels compiled, temp buffer pooled
            Finalizers.Settle();
            long reads = B.HostReads, leased = B.Pool.LeasedBytes, allocations = B.Pool.Allocations;
            B.ArgSort(dx, g, rows, n, true);
            Assert.Equal(reads, B.HostReads);
            Assert.Equal(leased, B.Pool.LeasedBytes);
            Assert.Equal(allocations, B.Pool.Allocations);
            return 0;
        });
    }

    [Fact]
    public void TensorArgSortOfLongRowsMatchesCpu()
    {
        // [3, 3000]: 3·3000² comparisons, past the rank-counting limit, so the op takes the radix path by default.
        int[] shape = [3, 3000];
        Assert.False(B.UsesRankArgSort(shape[0], shape[1]));
        var x = Floats(shape[0] * shape[1], 7);
        foreach (bool descending in new[] { false, true })
        {
            var expected = Tensor.FromHost(x, shape, Device.Cpu).ArgSort(descending).ToLongArray();
            var actual = Tensor.FromHost(x, shape, Dev).ArgSort(descending);
            Assert.Equal(Dev, actual.Device);
            Assert.True(expected.SequenceEqual(actual.ToLongArray()), $"descending={descending}");
        }
    }
}
