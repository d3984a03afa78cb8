namespace PureMoE.Engine.Tests.Packaging;

/// <summary>Finds the repository root (the folder holding PureMoE.sln) above the test binaries.</summary>
internal static class RepoPaths
{
    public static string Root { get; } = Find();

    private static string Find()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PureMoE.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no PureMoE.sln above {AppContext.BaseDirectory}");
    }
}
