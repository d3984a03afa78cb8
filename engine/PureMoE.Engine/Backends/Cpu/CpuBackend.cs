using PureMoE.Backends.Reference;

namespace PureMoE.Backends.Cpu;

/// <summary>
/// The fast CPU backend: SIMD kernels (System.Numerics.Tensors' TensorPrimitives, Vector512/256) and a blocked,
/// multi-threaded SGEMM. Every kernel it does not override is the reference kernel.
/// </summary>
public partial class CpuBackend : ReferenceBackend
{
}
