namespace PureMoE.Engine;

/// <summary>Marks the engine assembly (used by tests and tools to locate it).</summary>
public static class AssemblyMarker { }
