namespace PureMoE.Backends;

/// <summary>
/// The first <see cref="Length"/> elements of a buffer: one tensor of the multi-tensor ("foreach") primitives
/// (<see cref="IBackend.SumOfSquares"/>, <see cref="IBackend.ScaleInPlace"/>), which treat a list of tensors as
/// one so that a GPU needs a launch per several tensors rather than one per tensor.
/// </summary>
/// <param name="Storage">The buffer.</param>
/// <param name="Length">Elements from index 0.</param>
public readonly record struct BufferSlice(Storage Storage, int Length);

/// <summary>
/// One parameter of a multi-tensor AdamW step (<see cref="IBackend.AdamW(IReadOnlyList{AdamWSlot}, double, double, double, double, double)"/>):
/// its four buffers of <see cref="Length"/> elements each, and its own bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ
/// (parameters that had no gradient at some step are a step behind the others).
/// </summary>
/// <param name="Param">The parameter, updated in place.</param>
/// <param name="Grad">Its gradient.</param>
/// <param name="M">The first-moment average, updated in place.</param>
/// <param name="V">The second-moment average, updated in place.</param>
/// <param name="Length">Elements of each buffer, from index 0.</param>
/// <param name="BiasCorrection1">1 − β₁ᵗ at this parameter's step t.</param>
/// <param name="BiasCorrection2">1 − β₂ᵗ at this parameter's step t.</param>
public readonly record struct AdamWSlot(Storage Param, Storage Grad, Storage M, Storage V, int Length,
    double BiasCorrection1, double BiasCorrection2);
