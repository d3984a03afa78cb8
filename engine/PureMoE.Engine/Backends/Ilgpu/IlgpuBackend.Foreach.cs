using ILGPU;
using ILGPU.Runtime;

namespace PureMoE.Backends.Ilgpu;

public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<int>, GroupOperands, ArrayView<float>, int>? _foreachSumOfSquares;
    private Action<KernelConfig, ArrayView<int>, GroupOperands, ArrayView<float>>? _foreachScale;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, float>? _clipCoefficient;
    private Action<KernelConfig, ArrayView<int>, GroupOperands, GroupOperands, GroupOperands, GroupOperands, AdamWArgs>? _foreachAdamW;

    /// <summary>Elements per chunk of a foreach launch: each of a group's threads takes 16 of them.</summary>
    private int ForeachChunk => 16 * GroupSize;

    /// <summary>
    /// One launch of a foreach kernel: the indices of its tensors (slot i holds tensors[Indices[i]]), its table
    /// (<see cref="Chunks"/> entries of <see cref="IlgpuKernels.ForeachChunkInts"/>, then room for a few ints per
    /// slot) and its chunk count, which is its group count.
    /// </summary>
    private readonly record struct ForeachLaunch(int[] Indices, int[] Table, int Chunks);

    /// <summary>The non-empty tensors in launches of up to <see cref="GroupOperands.Count"/>, each with its chunk table.</summary>
    private List<ForeachLaunch> ForeachLaunches(IReadOnlyList<int> lengths, int intsPerSlot = 0)
    {
        var launches = new List<ForeachLaunch>();
        var nonEmpty = Enumerable.Range(0, lengths.Count).Where(i => lengths[i] > 0).ToArray();
        for (int first = 0; first < nonEmpty.Length; first += GroupOperands.Count)
        {
            var indices = nonEmpty[first..Math.Min(nonEmpty.Length, first + GroupOperands.Count)];
            int chunks = indices.Sum(i => (lengths[i] + ForeachChunk - 1) / ForeachChunk);
            var table = new int[chunks * IlgpuKernels.ForeachChunkInts + intsPerSlot * indices.Length];
            int at = 0;
            for (int slot = 0; slot < indices.Length; slot++)
            {
                int n = lengths[indices[slot]];
                for (int start = 0; start < n; start += ForeachChunk)
                {
                    table[at++] = slot;
                    table[at++] = start;
                    table[at++] = Math.Min(ForeachChunk, n - start);
                }
            }
            launches.Add(new ForeachLaunch(indices, table, chunks));
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

    private GroupOperands Operands(IEnumerable<BufferSlice> tensors, string op) =>
        GroupOperands.Of(tensors.Select(t => F(t.Storage, op).SubView(0, t.Length)).ToArray());

    /// <inheritdoc />
    /// <remarks>
    /// Each launch sums up to 16 tensors' squares chunk by chunk into a partial per chunk; one reduction then adds
    /// the partials. No atomics: the result is the same bits run to run.
    /// </remarks>
    public void SumOfSquares(IReadOnlyList<BufferSlice> tensors, Storage result)
    {
        const string op = "SumOfSquares";
        var launches = ForeachLaunches(tensors.Select(t => t.Length).ToArray());
        int partialCount = launches.Sum(l => l.Chunks);
        if (partialCount == 0)
        {
            Fill(result, 0, 1, 0);
            return;
        }
        using var partials = AllocateUninitialized(DType.Float32, partialCount);
        var kernel = Cached(ref _foreachSumOfSquares, () =>
            Accelerator.LoadStreamKernel<ArrayView<int>, GroupOperands, ArrayView<float>, int>(IlgpuKernels.ForeachSumOfSquares));
        int first = 0;
        foreach (var launch in launches)
        {
            var x = Operands(launch.Indices.Select(i => tensors[i]), op);
            var (buffer, table) = UploadTable(launch.Table);
            kernel(RowConfig(launch.Chunks), table, x, F(partials, op), first);
            // Safe without waiting: whatever rents the buffer next runs after this kernel on the same stream.
            Pool.Return(buffer);
            first += launch.Chunks;
        }
        Reduce(ReduceOp.Sum, partials, 0, result, 1, partialCount, 1);
    }

    /// <inheritdoc />
    public void ClipCoefficient(Storage sumSquares, double maxNorm, Storage norm, Storage coefficient)
    {
        const string op = "ClipCoefficient";
        Cached(ref _clipCoefficient, () => Auto<ArrayView<float>, ArrayView<float>, ArrayView<float>, float>(IlgpuKernels.ClipCoefficient))(
            1, F(sumSquares, op), F(norm, op), F(coefficient, op), (float)maxNorm);
    }

    /// <inheritdoc />
    public void ScaleInPlace(IReadOnlyList<BufferSlice> tensors, Storage scale)
    {
        const string op = "ScaleInPlace";
        var kernel = Cached(ref _foreachScale, () =>
            Accelerator.LoadStreamKernel<ArrayView<int>, GroupOperands, ArrayView<float>>(IlgpuKernels.ForeachScale));
        foreach (var launch in ForeachLaunches(tensors.Select(t => t.Length).ToArray()))
        {
            var x = Operands(launch.Indices.Select(i => tensors[i]), op);
            var (buffer, table) = UploadTable(launch.Table);
            kernel(new KernelConfig(launch.Chunks, GroupSize), table, x, F(scale, op).SubView(0, 1));
            Pool.Return(buffer);
        }
    }

    /// <inheritdoc />
    public void AdamW(IReadOnlyList<AdamWSlot> slots, double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        const string op = "AdamW";
        var kernel = Cached(ref _foreachAdamW, () =>
            Accelerator.LoadStreamKernel<ArrayView<int>, GroupOperands, GroupOperands, GroupOperands, GroupOperands, AdamWArgs>(IlgpuKernels.ForeachAdamW));
        foreach (var launch in ForeachLaunches(slots.Select(s => s.Length).ToArray(), intsPerSlot: 2))
        {
            var these = launch.Indices.Select(i => slots[i]).ToArray();
            // After the chunks, each slot's step size and √(1 − β₂ᵗ) as float bits (computed as the single-tensor AdamW does).
            int tail = launch.Chunks * IlgpuKernels.ForeachChunkInts;
            for (int slot = 0; slot < these.Length; slot++)
            {
                var a = Args(these[slot]);
                launch.Table[tail + 2 * slot] = BitConverter.SingleToInt32Bits(a.StepSize);
                launch.Table[tail + 2 * slot + 1] = BitConverter.SingleToInt32Bits(a.SqrtBc2);
            }
            var (buffer, view) = UploadTable(launch.Table);
            BufferSlice[] Part(Func<AdamWSlot, Storage> of) => these.Select(s => new BufferSlice(of(s), s.Length)).ToArray();
            // The shared scalars (decay, betas, eps) are any slot's; the kernel replaces the per-slot two from the table.
            kernel(new KernelConfig(launch.Chunks, GroupSize), view, Operands(Part(s => s.Param), op), Operands(Part(s => s.Grad), op),
                Operands(Part(s => s.M), op), Operands(Part(s => s.V), op), Args(these[0]));
            Pool.Return(buffer);
        }

        AdamWArgs Args(AdamWSlot s) => AdamWScalars(lr, beta1, beta2, eps, weightDecay, s.BiasCorrection1, s.BiasCorrection2);
    }
}
