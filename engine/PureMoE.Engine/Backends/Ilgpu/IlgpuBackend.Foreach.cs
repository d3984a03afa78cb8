using ILGPU;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<int>, GroupOperands, ArrayView<float>, int>? _foreachSumOfSquares;
    private Action<KernelConfig, ArrayView<int>, GroupOperands, ArrayView<float>>? _foreachScale;
    private Action<KernelConfig, ArrayView<int>, GroupOperands, GroupOperands, GroupOperands, GroupOperands, AdamWArgs>? _foreachAdamW;

    /// <summary>Elements per chunk of a foreach launch: each of a group's threads takes 16 of them.</summary>
    private int ForeachChunk => 16 * GroupSize;

    /// <summary>
    /// The non-empty tensors in launches of up to <see cref="GroupOperands.Count"/>: for each launch the indices of
    /// its tensors (slot i holds tensors[indices[i]]) and its chunk table.
    /// </summary>
    private List<(int[] Indices, int[] Chunks)> ForeachLaunches(IReadOnlyList<int> lengths)
    {
        var launches = new List<(int[], int[])>();
        var nonEmpty = Enumerable.Range(0, lengths.Count).Where(i => lengths[i] > 0).ToArray();
        for (int first = 0; first < nonEmpty.Length; first += GroupOperands.Count)
        {
            var indices = nonEmpty[first..Math.Min(nonEmpty.Length, first + GroupOperands.Count)];
            var chunks = new List<int>();
            for (int slot = 0; slot < indices.Length; slot++)
            {
                int n = lengths[indices[slot]];
                for (int start = 0; start < n; start += ForeachChunk)
                    chunks.AddRange([slot, start, Math.Min(ForeachChunk, n - start)]);
            }
            launches.Add((indices, chunks.ToArray()));
        }
        return launches;
    }

    /// <summary>Uploads a table into a pooled buffer (returned to the pool by the caller, after the launch is queued).</summary>
    private (MemoryBuffer1D<byte, Stride1D.Dense> Buffer, ArrayView<int> View) UploadTable(int[] table)
    {
        var buffer = Pool.Rent((long)table.Length * sizeof(int));
        ArrayView<byte> bytes = buffer.View;
        var view = bytes.Cast<int>().SubView(0, table.Length);
        Uploads.Upload(view, table);
        return (buffer, view);
    }

    private GroupOperands Operands(IEnumerable<Storage> storages, int[] lengths, string op) =>
        GroupOperands.Of(storages.Select((s, i) => F(s, op).SubView(0, lengths[i])).ToArray());

    /// <inheritdoc />
    /// <remarks>
    /// Each launch sums up to 16 tensors' squares chunk by chunk into a partial per chunk; one reduction then adds
    /// the partials. No atomics: the result is the same bits run to run.
    /// </remarks>
    public void SumOfSquares(IReadOnlyList<BufferSlice> tensors, Storage result)
    {
        const string op = "SumOfSquares";
        var launches = ForeachLaunches(tensors.Select(t => t.Length).ToArray());
        int partialCount = launches.Sum(l => l.Chunks.Length / IlgpuKernels.ForeachChunkInts);
        if (partialCount == 0)
        {
            Fill(result, 0, 1, 0);
            return;
        }
        using var partials = AllocateUninitialized(DType.Float32, partialCount);
        var kernel = Cached(ref _foreachSumOfSquares, () =>
            Accelerator.LoadStreamKernel<ArrayView<int>, GroupOperands, ArrayView<float>, int>(IlgpuKernels.ForeachSumOfSquares));
        int first = 0;
        foreach (var (indices, chunks) in launches)
        {
            int[] lengths = indices.Select(i => tensors[i].Length).ToArray();
            var x = Operands(indices.Select(i => tensors[i].Storage), lengths, op);
            var (buffer, table) = UploadTable(chunks);
            int groups = chunks.Length / IlgpuKernels.ForeachChunkInts;
            kernel(RowConfig(groups), table, x, F(partials, op), first);
            // Safe without waiting: whatever rents the buffer next runs after this kernel on the same stream.
            Pool.Return(buffer);
            first += groups;
        }
        Reduce(ReduceOp.Sum, partials, 0, result, 1, partialCount, 1);
    }

    /// <inheritdoc />
    public void ScaleInPlace(IReadOnlyList<BufferSlice> tensors, Storage scale)
    {
        const string op = "ScaleInPlace";
        var kernel = Cached(ref _foreachScale, () =>
            Accelerator.LoadStreamKernel<ArrayView<int>, GroupOperands, ArrayView<float>>(IlgpuKernels.ForeachScale));
        foreach (var (indices, chunks) in ForeachLaunches(tensors.Select(t => t.Length).ToArray()))
        {
            int[] lengths = indices.Select(i => tensors[i].Length).ToArray();
            var x = Operands(indices.Select(i => tensors[i].Storage), lengths, op);
            var (buffer, table) = UploadTable(chunks);
            kernel(new KernelConfig(chunks.Length / IlgpuKernels.ForeachChunkInts, GroupSize), table, x, F(scale, op).SubView(0, 1));
            Pool.Return(buffer);
        }
    }

    /// <inheritdoc />
    public void AdamW(IReadOnlyList<AdamWSlot> slots, double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        const string op = "AdamW";
        var kernel = Cached(ref _foreachAdamW, () =>
            Accelerator.LoadStreamKernel<ArrayView<int>, GroupOperands, GroupOperands, GroupOperands, GroupOperands, AdamWArgs>(IlgpuKernels.ForeachAdamW));
        foreach (var (indices, chunks) in ForeachLaunches(slots.Select(s => s.Length).ToArray()))
        {
            var launch = indices.Select(i => slots[i]).ToArray();
            int[] lengths = launch.Select(s => s.Length).ToArray();
            // The chunk table, then each slot's step size and √(1 − β₂ᵗ) as float bits (computed as the single-tensor AdamW does).
            var table = new int[chunks.Length + 2 * launch.Length];
            chunks.CopyTo(table, 0);
            for (int slot = 0; slot < launch.Length; slot++)
            {
                var a = Args(launch[slot]);
                table[chunks.Length + 2 * slot] = BitConverter.SingleToInt32Bits(a.StepSize);
                table[chunks.Length + 2 * slot + 1] = BitConverter.SingleToInt32Bits(a.SqrtBc2);
            }
            var (buffer, view) = UploadTable(table);
            // The shared scalars (decay, betas, eps) are any slot's; the kernel replaces the per-slot two from the table.
            kernel(new KernelConfig(chunks.Length / IlgpuKernels.ForeachChunkInts, GroupSize), view,
                Operands(launch.Select(s => s.Param), lengths, op), Operands(launch.Select(s => s.Grad), lengths, op),
                Operands(launch.Select(s => s.M), lengths, op), Operands(launch.Select(s => s.V), lengths, op), Args(launch[0]));
            Pool.Return(buffer);
        }

        AdamWArgs Args(AdamWSlot s) => AdamWScalars(lr, beta1, beta2, eps, weightDecay, s.BiasCorrection1, s.BiasCorrection2);
    }
}
