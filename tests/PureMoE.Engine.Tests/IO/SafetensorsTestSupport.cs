using System.Buffers.Binary;
using System.Text;
using PureMoE.IO;

namespace PureMoE.Engine.Tests.IO;

/// <summary>A unique temporary directory per test class instance, deleted afterwards.</summary>
public abstract class SafetensorsTestBase : IDisposable
{
    protected SafetensorsTestBase()
    {
        Dir = Path.Combine(Path.GetTempPath(), "puremoe-st-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Dir);
    }

    protected string Dir { get; }

    protected string PathOf(string fileName) => Path.Combine(Dir, fileName);

    /// <summary>Builds a file: u64 LE header length, the header text (padded to 8 with spaces), then data.</summary>
    protected static byte[] BuildFile(string headerJson, byte[] data, bool pad = true)
    {
        byte[] json = Encoding.UTF8.GetBytes(headerJson);
        int padding = pad ? (8 - json.Length % 8) % 8 : 0;
        var file = new byte[8 + json.Length + padding + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)(json.Length + padding));
        json.CopyTo(file, 8);
        file.AsSpan(8 + json.Length, padding).Fill((byte)' ');
        data.CopyTo(file, 8 + json.Length + padding);
        return file;
    }

    protected string WriteBytes(string fileName, byte[] bytes)
    {
        string p = PathOf(fileName);
        File.WriteAllBytes(p, bytes);
        return p;
    }

    /// <summary>Asserts Open fails with the right type and message, and that the file handle was released.</summary>
    protected static SafetensorsFormatException AssertCorrupt(string path, string phrase)
    {
        var ex = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Contains(Path.GetFileName(path), ex.Message, StringComparison.Ordinal);
        Assert.Contains(phrase, ex.Message, StringComparison.Ordinal);
        Assert.Equal(Path.GetFullPath(path), ex.FilePath);
        // The handle must be released: an exclusive open (flock emulation on Unix) succeeds.
        using (new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None))
        {
        }
        return ex;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
        }
        GC.SuppressFinalize(this);
    }
}
