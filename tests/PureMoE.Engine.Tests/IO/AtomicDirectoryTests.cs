using PureMoE.IO;

namespace PureMoE.Engine.Tests.IO;

public sealed class AtomicDirectoryTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("puremoe-atomic").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public void ReplacesTheWholeDirectory()
    {
        string dir = Path.Combine(_root, "d");
        AtomicDirectory.Write(dir, t => { File.WriteAllText(Path.Combine(t, "a"), "1"); File.WriteAllText(Path.Combine(t, "b"), "1"); });
        AtomicDirectory.Write(dir, t => File.WriteAllText(Path.Combine(t, "a"), "2"));
        Assert.Equal("2", File.ReadAllText(Path.Combine(dir, "a")));
        Assert.False(File.Exists(Path.Combine(dir, "b")));            // nothing of the old version is mixed in
        Assert.Single(Directory.GetDirectories(_root));
    }

    [Fact]
    public void AFailedFillLeavesTheOldDirectoryAndNoTemporary()
    {
        string dir = Path.Combine(_root, "d");
        AtomicDirectory.Write(dir, t => File.WriteAllText(Path.Combine(t, "a"), "old"));
        Assert.Throws<InvalidOperationException>(() => AtomicDirectory.Write(dir, t =>
        {
            File.WriteAllText(Path.Combine(t, "a"), "half");
            throw new InvalidOperationException("disk full");
        }));
        Assert.Equal("old", File.ReadAllText(Path.Combine(dir, "a")));
        Assert.Single(Directory.GetDirectories(_root));
    }
}
