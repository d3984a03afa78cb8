namespace PureMoE.IO;

/// <summary>
/// Writes a whole directory atomically: its files go into a temporary sibling, which then replaces the target by
/// rename. A crash or an exception leaves either the old directory or the new one, never a mix, and no temporary
/// directory behind.
/// </summary>
public static class AtomicDirectory
{
    /// <summary>Calls <paramref name="fill"/> with an empty temporary directory, then swaps it in as <paramref name="dir"/>.</summary>
    public static void Write(string dir, Action<string> fill)
    {
        string full = Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar);
        string parent = Path.GetDirectoryName(full) ?? ".";
        Directory.CreateDirectory(parent);
        string temp = Path.Combine(parent, $".{Path.GetFileName(full)}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        try
        {
            fill(temp);
            SwapIn(temp, full);
        }
        catch
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            throw;
        }
    }

    // Replace dir by temp: move the old one aside, move the new one in, then delete the old one.
    private static void SwapIn(string temp, string dir)
    {
        string? old = null;
        if (Directory.Exists(dir))
        {
            old = dir + $".old-{Guid.NewGuid():N}";
            Directory.Move(dir, old);
        }
        try
        {
            Directory.Move(temp, dir);
        }
        catch
        {
            if (old is not null) Directory.Move(old, dir);
            throw;
        }
        if (old is not null) Directory.Delete(old, recursive: true);
    }
}
