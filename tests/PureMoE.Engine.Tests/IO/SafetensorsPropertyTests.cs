using System.Text;
using FsCheck.Xunit;
using PureMoE.IO;

namespace PureMoE.Engine.Tests.IO;

/// <summary>
/// Property tests. FsCheck supplies the seed; a seeded <see cref="Random"/> builds the (structured)
/// file content, so a failing case is reproducible from the reported seed.
/// </summary>
public sealed class SafetensorsPropertyTests : SafetensorsTestBase
{
    // Characters that stress JSON escaping and UTF-8 ordering (quotes, backslash, controls, non-ASCII,
    // a surrogate pair, U+FFFF/U+E000 whose UTF-16 order differs from UTF-8 order vs. surrogates).
    private static readonly string[] NameChars =
        ["a", "b", "Z", "0", ".", "_", "\"", "\\", "/", "\n", "\t", "\u0001", "\u007f", "é", "中", "\uE000", "\uFFFF", "😀", " "];

    [Property(MaxTest = 60)]
    public void WriteThenRead_PreservesEverything_AndRewriteIsByteIdentical(int seed)
    {
        var rng = new Random(seed);
        List<SafetensorsTensor> tensors = RandomTensors(rng);
        Dictionary<string, string>? meta = rng.Next(3) == 0 ? null : RandomMetadata(rng);

        string p = PathOf($"rt{seed}.safetensors");
        SafetensorsWriter.Write(p, tensors, meta);
        byte[] firstBytes = File.ReadAllBytes(p);
        Assert.Equal(0UL, BitConverter.ToUInt64(firstBytes, 0) % 8);

        List<SafetensorsTensor> readBack;
        using (SafetensorsFile f = SafetensorsFile.Open(p))
        {
            Assert.Equal(tensors.Select(t => t.Name).Order(StringComparer.Ordinal), f.Names);
            Assert.Equal(
                (meta ?? []).OrderBy(kv => kv.Key, StringComparer.Ordinal).ToArray(),
                f.Metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToArray());
            readBack = [];
            foreach (SafetensorsTensor expected in tensors)
            {
                SafetensorsTensor actual = f.Read(expected.Name);
                Assert.Equal(expected.DType, actual.DType);
                Assert.Equal(expected.Shape, actual.Shape);
                Assert.Equal(expected.Data.ToArray(), actual.Data.ToArray());
                SafetensorsTensorInfo info = f.GetInfo(expected.Name);
                Assert.Equal(expected.Data.Length, info.ByteLength);
                readBack.Add(actual);
            }
        }

        // Deterministic: writing what we read (in another order) gives identical bytes.
        readBack.Reverse();
        string p2 = PathOf($"rt{seed}-again.safetensors");
        SafetensorsWriter.Write(p2, readBack, meta is null ? null : new Dictionary<string, string>(meta.Reverse()));
        Assert.Equal(firstBytes, File.ReadAllBytes(p2));
    }

    [Property(MaxTest = 150)]
    public void CorruptedFiles_EitherOpenCleanlyOrThrowFormatException(int seed)
    {
        var rng = new Random(seed);
        string p = PathOf($"fuzz{seed}.safetensors");
        SafetensorsWriter.Write(p, RandomTensors(rng), RandomMetadata(rng));
        byte[] bytes = File.ReadAllBytes(p);

        int mutations = 1 + rng.Next(4);
        for (int i = 0; i < mutations; i++)
        {
            switch (rng.Next(4))
            {
                case 0: // flip a byte anywhere in the length or header (where validation matters most)
                    bytes[rng.Next(Math.Min(bytes.Length, 8 + (int)Math.Min(BitConverter.ToUInt64(bytes, 0), 4096)))] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1: // replace a header byte by a JSON-significant character
                    bytes[8 + rng.Next(Math.Max(1, Math.Min(bytes.Length - 8, 64)))] = "{}[],:\"-019e. "u8[rng.Next(14)];
                    break;
                case 2: // truncate
                    Array.Resize(ref bytes, rng.Next(bytes.Length + 1));
                    break;
                default: // append garbage
                    bytes = [.. bytes, .. Enumerable.Range(0, rng.Next(1, 16)).Select(_ => (byte)rng.Next(256))];
                    break;
            }
            if (bytes.Length < 9)
            {
                break;
            }
        }
        File.WriteAllBytes(p, bytes);

        try
        {
            using SafetensorsFile f = SafetensorsFile.Open(p);
            foreach (string name in f.Names)
            {
                SafetensorsTensor t = f.Read(name); // every validated tensor must be readable
                Assert.Equal(f.GetInfo(name).ByteLength, t.Data.Length);
            }
        }
        catch (SafetensorsFormatException ex)
        {
            Assert.Contains(Path.GetFileName(p), ex.Message, StringComparison.Ordinal);
        }
    }

    private static List<SafetensorsTensor> RandomTensors(Random rng)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        int count = rng.Next(7);
        while (names.Count < count)
        {
            string n = RandomString(rng, 1 + rng.Next(6));
            if (n != "__metadata__")
            {
                names.Add(n);
            }
        }
        var dtypes = Enum.GetValues<SafetensorsDType>();
        var result = new List<SafetensorsTensor>();
        foreach (string name in names)
        {
            SafetensorsDType dtype = dtypes[rng.Next(dtypes.Length)];
            int rank = rng.Next(5); // 0 = scalar
            int[] shape = Enumerable.Range(0, rank).Select(_ => rng.Next(8) == 0 ? 0 : rng.Next(1, 5)).ToArray();
            long elements = shape.Aggregate(1L, (a, d) => a * d);
            var data = new byte[elements * dtype.ElementSize()];
            rng.NextBytes(data);
            result.Add(new SafetensorsTensor(name, dtype, shape, data));
        }
        return result;
    }

    private static Dictionary<string, string> RandomMetadata(Random rng)
    {
        var meta = new Dictionary<string, string>(StringComparer.Ordinal);
        int count = rng.Next(4);
        for (int i = 0; i < count; i++)
        {
            meta[RandomString(rng, rng.Next(5))] = RandomString(rng, rng.Next(8));
        }
        return meta;
    }

    private static string RandomString(Random rng, int length)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < length; i++)
        {
            sb.Append(NameChars[rng.Next(NameChars.Length)]);
        }
        return sb.ToString();
    }
}
