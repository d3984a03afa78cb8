using PureMoE.Backends;
using PureMoE.Backends.Cpu;
using PureMoE.Backends.Ilgpu;
using PureMoE.Engine.Tests.Backends;

namespace PureMoE.Engine.Tests.Ilgpu;

/// <summary>IndexAdd on ILGPU's CPU accelerator (the GPU emulator) against the CPU backend.</summary>
[Trait("Device", "IlgpuCpu")]
[Collection("Ilgpu")]
public sealed class IlgpuCpuIndexAddTests : IlgpuIndexAddTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.IlgpuCpu;
}

/// <summary>The same IndexAdd tests on CUDA device 0; skipped where there is none.</summary>
[Trait("Device", "Cuda")]
[Collection("Ilgpu")]
public sealed class CudaIndexAddTests : IlgpuIndexAddTests
{
    /// <inheritdoc />
    protected override DeviceKind Kind => DeviceKind.Cuda;
}

/// <summary>
/// IndexAdd against <see cref="Device.Cpu"/>'s backend, bit for bit, on each path (the direct scan, the sort, and
/// the backend's own choice, <see cref="IlgpuBackend.UsesDirectIndexAdd"/>): both add each destination element's sources in increasing j
/// onto its initial value, so float32 results must have the same bits (a float add is exact IEEE rounding on any
/// device, and no FMA can form from a lone add). Indices repeat, some rows get nothing, some indices are out of
/// range (the device skips them; the CPU backend, which throws, gets the in-range ones only, in the same order).
/// </summary>
public abstract class IlgpuIndexAddTests : IlgpuTestBase
{
    private static readonly IBackend Cpu = K.Cpu;

    /// <summary>
    /// count indices into [0, axisLen): from a random subset of rows (about a third never occur), so rows repeat;
    /// with <paramref name="outOfRange"/>, about one in nine is out of range — negative, axisLen, or 2³² + a row,
    /// which a plain int cast would alias to that row.
    /// </summary>
    private static long[] Indices(int count, int axisLen, int seed, bool outOfRange)
    {
        var rng = new Random(seed);
        var rows = Enumerable.Range(0, axisLen).Where(_ => rng.Next(3) != 0).ToArray();
        if (rows.Length == 0) rows = [axisLen - 1];
        var ix = new long[count];
        for (int j = 0; j < count; j++)
        {
            ix[j] = rows[rng.Next(rows.Length)];
            if (outOfRange && rng.Next(9) == 0)
                ix[j] = rng.Next(4) switch { 0 => -1, 1 => axisLen, 2 => (1L << 32) + ix[j], _ => long.MinValue };
        }
        return ix;
    }

    /// <summary>dst after IndexAdd on the CPU backend, leaving out the out-of-range indices (kept in order).</summary>
    private static Array CpuIndexAdd(Array dst, long[] ix, Array src, int outer, int axisLen, int inner)
    {
        int count = ix.Length;
        var keep = Enumerable.Range(0, count).Where(j => (ulong)ix[j] < (ulong)axisLen).ToArray();
        var kept = keep.Select(j => ix[j]).ToArray();
        var keptSrc = Array.CreateInstance(src.GetType().GetElementType()!, outer * keep.Length * inner);
        for (int o = 0; o < outer; o++)
            for (int k = 0; k < keep.Length; k++)
                Array.Copy(src, (o * count + keep[k]) * inner, keptSrc, (o * keep.Length + k) * inner, inner);
        var d = K.S(dst);
        Cpu.IndexAdd(d, K.S(kept), K.S(keptSrc), outer, axisLen, kept.Length, inner);
        return d.Data;
    }

    [Fact]
    public void PathRuleFollowsTheMeasuredCrossover()
    {
        // An H200, 4096 rows × 1024 (bench/RESULTS.md): direct 0.095 ms at count 32, 0.29 at 128; sorted about 0.2.
        Assert.True(B.UsesDirectIndexAdd(1, 4096, 32, 1024));
        Assert.False(B.UsesDirectIndexAdd(1, 4096, 128, 1024));
        Assert.True(B.UsesDirectIndexAdd(1, 64, 1024, 1024));     // 2²⁶ reads: one launch wins
        Assert.False(B.UsesDirectIndexAdd(1, 64, 2048, 1024));    // long per thread: sorted
        Assert.False(B.UsesDirectIndexAdd(4, 64, 1024, 1024));    // 2²⁸ reads
    }

    /// <summary>The paths: forced direct, forced sorted, the backend's choice.</summary>
    private static readonly bool?[] Paths = [true, false, null];

    /// <summary>Runs <paramref name="body"/> with IndexAdd forced onto a path (null: the backend's choice).</summary>
    private T OnPath<T>(bool? direct, Func<T> body)
    {
        B.ForceDirectIndexAdd = direct;
        try { return body(); }
        finally { B.ForceDirectIndexAdd = null; }
    }

    private void CheckMatchesCpu(int outer, int axisLen, int count, int inner, bool outOfRange, int seed)
    {
        foreach (var direct in Paths)
            OnPath(direct, () => { CheckMatchesCpuOnce(outer, axisLen, count, inner, outOfRange, seed, direct); return 0; });
    }

    private void CheckMatchesCpuOnce(int outer, int axisLen, int count, int inner, bool outOfRange, int seed, bool? direct)
    {
        string path = direct switch { true => "direct", false => "sorted", null => "auto" };
        string what = $"{path} outer={outer} axisLen={axisLen} count={count} inner={inner}";
        var ix = Indices(count, axisLen, seed, outOfRange);
        var dst = K.Rand(outer * axisLen * inner, seed + 1);
        var src = K.Rand(outer * count * inner, seed + 2);
        var expected = (float[])CpuIndexAdd(dst, ix, src, outer, axisLen, inner);
        var d = Up(dst);
        B.IndexAdd(d, Up(ix), Up(src), outer, axisLen, count, inner);
        K.SameBits(expected, DownF(d), $"float32 {what}");

        var dstL = RandIdx(outer * axisLen * inner, 1000, seed + 3);
        var srcL = RandIdx(outer * count * inner, 1000, seed + 4);
        var expectedL = (long[])CpuIndexAdd(dstL, ix, srcL, outer, axisLen, inner);
        var dL = Up(dstL);
        B.IndexAdd(dL, Up(ix), Up(srcL), outer, axisLen, count, inner);
        Assert.True(expectedL.SequenceEqual(DownL(dL)), $"int64 {what}");
    }

    [Theory]
    [InlineData(1, 7, 0, 3)]
    [InlineData(1, 5, 1, 1)]
    [InlineData(2, 9, 32, 130)]
    [InlineData(1, 3, 33, 1)]       // few rows, long segments
    [InlineData(3, 17, 1037, 130)]  // sorted by default
    [InlineData(2, 513, 1500, 1)]
    [InlineData(1, 1, 1200, 5)]     // one row: one segment of all j
    public void MatchesCpuBitForBit(int outer, int axisLen, int count, int inner)
    {
        CheckMatchesCpu(outer, axisLen, count, inner, outOfRange: false, seed: outer * 7 + axisLen * 31 + count);
        CheckMatchesCpu(outer, axisLen, count, inner, outOfRange: true, seed: outer * 7 + axisLen * 31 + count + 5);
    }

    [Fact]
    public void RowsBeyond16BitsSortOnAll32()
    {
        // 70 000 rows: keys no longer fit the 16-bit sort, so the sorted path runs the 32-bit one.
        CheckMatchesCpu(1, 70_000, 300, 1, outOfRange: true, seed: 17);
    }

    [Fact]
    public void ManyIndicesSortLikeTheCpu()
    {
        // Enough indices for ILGPU's GPU radix sort to span many groups and grid passes (on CUDA: 10× more; the
        // emulator runs the CPU accelerator's own sort, and slowly).
        int count = Kind == DeviceKind.Cuda ? 300_007 : 30_011;
        CheckMatchesCpu(1, 4096, count, 2, outOfRange: true, seed: 23);
    }

    [Fact]
    public void OnlyOutOfRangeIndicesAddNothing()
    {
        int outer = 2, axisLen = 6, inner = 3, count = 40;
        var ix = Enumerable.Range(0, count).Select(j => j % 2 == 0 ? -1 - j : axisLen + (1L << 32) * j).ToArray();
        var dst = K.Rand(outer * axisLen * inner, 3);
        var src = K.Rand(outer * count * inner, 4);
        foreach (var direct in Paths)
        {
            var d = Up(dst);
            OnPath(direct, () => { B.IndexAdd(d, Up(ix), Up(src), outer, axisLen, count, inner); return 0; });
            K.SameBits(dst, DownF(d), $"dst direct={direct}");
        }
    }

    [Fact]
    public void BitIdenticalRunToRunAndReadsNothingBack()
    {
        int outer = 2, axisLen = 50, count = 700, inner = 9;
        var ix = Up(Indices(count, axisLen, 5, outOfRange: true));
        var src = Up(K.Rand(outer * count * inner, 6));
        var dst = K.Rand(outer * axisLen * inner, 7);
        float[] Run()
        {
            var d = Up(dst);
            long reads = B.HostReads;
            B.IndexAdd(d, ix, src, outer, axisLen, count, inner);
            Assert.Equal(reads, B.HostReads);
            return DownF(d);
        }
        foreach (var direct in Paths) OnPath(direct, () => { K.SameBits(Run(), Run(), $"run 2 direct={direct}"); return 0; });
    }

    [Fact]
    public void PoolBuffersGoBackAfterTheCall()
    {
        int outer = 1, axisLen = 40, count = 300, inner = 2;
        Storage ix = Up(Indices(count, axisLen, 8, false)), src = Up(K.Rand(count * inner, 9)), d = Up(K.Rand(axisLen * inner, 10));
        OnPath(false, () =>
        {
            B.IndexAdd(d, ix, src, outer, axisLen, count, inner); // warm: kernels compiled, temp buffer pooled
            Finalizers.Settle();
            long leased = B.Pool.LeasedBytes, allocations = B.Pool.Allocations;
            B.IndexAdd(d, ix, src, outer, axisLen, count, inner);
            Assert.Equal(leased, B.Pool.LeasedBytes);
            Assert.Equal(allocations, B.Pool.Allocations);
            return 0;
        });
    }

    /// <summary>x.IndexSelect(axis, idx) weighted by a target and summed: its gradient is IndexAdd of the target.</summary>
    private static float[] IndexSelectGrad(Device device, float[] x, int[] shape, int axis, long[] ix, float[] target, int[] yShape)
    {
        var tx = Tensor.FromHost(x, shape, device);
        tx.RequiresGrad = true;
        tx.IndexSelect(axis, Tensor.FromHost(ix, [ix.Length], device)).Mul(Tensor.FromHost(target, yShape, device)).Sum().Backward();
        return tx.Grad!.ToFloatArray();
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void IndexSelectBackwardMatchesCpuBitForBit(int axis)
    {
        // An embedding-like [outer?, rows, d] table and 300 lookups (repeating rows), on each path.
        int[] shape = axis == 0 ? [64, 17] : [3, 64, 17];
        long[] ix = Indices(300, 64, 11 + axis, outOfRange: false);
        int[] yShape = axis == 0 ? [300, 17] : [3, 300, 17];
        var x = K.Rand(shape.Aggregate(1, (a, b) => a * b), 12);
        var target = K.Rand(yShape.Aggregate(1, (a, b) => a * b), 13);
        var cpu = IndexSelectGrad(Device.Cpu, x, shape, axis, ix, target, yShape);
        foreach (var direct in Paths)
            K.SameBits(cpu, OnPath(direct, () => IndexSelectGrad(Dev, x, shape, axis, ix, target, yShape)), $"dx axis={axis} direct={direct}");
    }
}
