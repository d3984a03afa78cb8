namespace PureMoE.Backends;

/// <summary>
/// A debugging switch for buffers allocated without initialization: the outputs that a kernel is meant to overwrite
/// entirely (<see cref="IBackend.AllocateUninitialized"/>, <see cref="CpuStorage.AllocateUninitialized"/>). Fresh
/// memory from the operating system is zero, which hides a kernel that reads, or leaves unwritten, an element it
/// should have written; with <see cref="Poison"/> on, such memory starts as NaN instead and the bug shows. The test
/// projects turn it on for every test.
/// </summary>
public static class UninitializedMemory
{
    /// <summary>
    /// When true, uninitialized host arrays are filled with NaN (long.MinValue for int64) and uninitialized ILGPU
    /// buffers with bytes 0xFF (NaN as float, −1 as int64). Off by default (it costs a pass over each buffer); the
    /// environment variable <c>PUREMOE_POISON_UNINITIALIZED=1</c> turns it on for a whole process.
    /// </summary>
    public static bool Poison { get; set; } = Environment.GetEnvironmentVariable("PUREMOE_POISON_UNINITIALIZED") == "1";
}
