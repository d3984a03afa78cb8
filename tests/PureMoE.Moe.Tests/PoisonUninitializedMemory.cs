using System.Runtime.CompilerServices;
using PureMoE.Backends;

namespace PureMoE.Moe.Tests;

/// <summary>
/// Every test runs with uninitialized buffers filled with NaN, so that a kernel which reads, or fails to write,
/// part of an output it was given uninitialized makes a test fail instead of passing on the OS's zero pages.
/// </summary>
internal static class PoisonUninitializedMemory
{
#pragma warning disable CA2255 // A module initializer in a test assembly is the point: it runs before any test.
    [ModuleInitializer]
    internal static void TurnOn() => UninitializedMemory.Poison = true;
#pragma warning restore CA2255
}
