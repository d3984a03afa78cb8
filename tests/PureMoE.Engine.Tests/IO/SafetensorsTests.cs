using System.Text;
using PureMoE.IO;

namespace PureMoE.Engine.Tests.IO;

/// <summary>Golden bytes, reader/writer behaviour and atomic writes.</summary>
public sealed class SafetensorsTests : SafetensorsTestBase
{
    private static readonly byte[] OneTwoF32 = [0, 0, 0x80, 0x3F, 0, 0, 0, 0x40]; // 1.0f, 2.0f little-endian

    // ---- golden files (as the Python/Rust `safetensors` library writes them) ----

    [Fact]
    public void Golden_SingleF32Tensor_ReadsAndWritesIdenticalBytes()
    {
        const string header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        Assert.Equal(54, header.Length); // padded with 2 spaces to 56
        byte[] expected = [56, 0, 0, 0, 0, 0, 0, 0, .. Encoding.ASCII.GetBytes(header), 32, 32, .. OneTwoF32];

        string golden = WriteBytes("golden.safetensors", expected);
        using (var f = SafetensorsFile.Open(golden))
        {
            Assert.Equal(["a"], f.Names);
            Assert.Empty(f.Metadata);
            SafetensorsTensorInfo info = f.GetInfo("a");
            Assert.Equal(SafetensorsDType.F32, info.DType);
            Assert.Equal([2], info.Shape);
            Assert.Equal((0L, 8L), (info.DataBegin, info.DataEnd));
            Assert.Equal([1f, 2f], f.ReadFloat32("a"));
        }

        string ours = PathOf("ours.safetensors");
        SafetensorsWriter.Write(ours, [SafetensorsTensor.FromFloat32("a", [1f, 2f], [2])]);
        Assert.Equal(expected, File.ReadAllBytes(ours));
    }

    [Fact]
    public void Golden_ReferenceLibraryTestVectors()
    {
        // From the reference implementation's own serialization tests.
        byte[] data = [0, 0, 0, 0, 0, 0, 0x80, 0x3F, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40, 0, 0, 0xA0, 0x40];
        float[] values = [0, 1, 2, 3, 4, 5];
        AssertWrites([], null, [8, 0, 0, 0, 0, 0, 0, 0, .. "{}      "u8]);
        AssertWrites([], new Dictionary<string, string> { ["framework"] = "pt" },
            [40, 0, 0, 0, 0, 0, 0, 0, .. "{\"__metadata__\":{\"framework\":\"pt\"}}     "u8]);
        AssertWrites([SafetensorsTensor.FromFloat32("attn0", values, [1, 1, 2, 3])], null,
            [72, 0, 0, 0, 0, 0, 0, 0, .. "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       "u8, .. data]);
    }

    [Fact]
    public void Writer_OrdersByDescendingAlignmentThenName_MetadataFirst()
    {
        SafetensorsTensor[] tensors =
        [
            SafetensorsTensor.FromUInt8("b", [7], [1]),
            SafetensorsTensor.FromFloat32("a", [1f], []),
            SafetensorsTensor.FromInt64("z", [5], [1]),
            SafetensorsTensor.FromBool("c", [true], [1]),
            SafetensorsTensor.FromFloat32("B", [2f], [1]),
        ];
        var meta = new Dictionary<string, string> { ["z"] = "1", ["a"] = "q\"\\\n\u0001é" };
        string p = PathOf("order.safetensors");
        SafetensorsWriter.Write(p, tensors, meta);
        byte[] bytes = File.ReadAllBytes(p);
        int n = (int)BitConverter.ToUInt64(bytes, 0);
        string header = Encoding.UTF8.GetString(bytes, 8, n);
        Assert.Equal(0, n % 8);
        Assert.Equal(
            "{\"__metadata__\":{\"a\":\"q\\\"\\\\\\n\\u0001é\",\"z\":\"1\"}," +
            "\"z\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}," +
            "\"B\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}," +
            "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[12,16]}," +
            "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[16,17]}," +
            "\"c\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[17,18]}}",
            header.TrimEnd(' '));

        using var f = SafetensorsFile.Open(p);
        Assert.Equal(["B", "a", "b", "c", "z"], f.Names);
        Assert.Equal("q\"\\\n\u0001é", f.Metadata["a"]);
        Assert.Equal([5L], f.ReadInt64("z"));
        Assert.Equal([true], f.Read("c").ToBoolean());
    }

    private void AssertWrites(SafetensorsTensor[] tensors, Dictionary<string, string>? meta, byte[] expected)
    {
        string p = PathOf(Guid.NewGuid().ToString("N") + ".safetensors");
        SafetensorsWriter.Write(p, tensors, meta);
        Assert.Equal(expected, File.ReadAllBytes(p));
        using var f = SafetensorsFile.Open(p);
        Assert.Equal(tensors.Length, f.Names.Count);
    }

    // ---- reader behaviour ----

    [Fact]
    public void ZeroSizedTensors_WithEmptyDataSection_Work()
    {
        string p = PathOf("zero.safetensors");
        SafetensorsWriter.Write(p, [SafetensorsTensor.FromFloat32("e", [], [3, 0, 2]), SafetensorsTensor.FromInt64("f", [], [0])]);
        using var f = SafetensorsFile.Open(p);
        Assert.Equal(0, f.DataLength);
        SafetensorsTensor e = f.Read("e");
        Assert.Equal([3, 0, 2], e.Shape);
        Assert.Equal(0, e.Data.Length);
        Assert.Empty(f.ReadFloat32("e"));
        Assert.Empty(f.ReadInt64("f"));
    }

    [Fact]
    public void ZeroSizedTensor_NextToData_AndScalar_Work()
    {
        string p = PathOf("mixed.safetensors");
        SafetensorsWriter.Write(p, [SafetensorsTensor.FromFloat64("s", [3.5], []), SafetensorsTensor.FromFloat64("empty", [], [0, 4])]);
        using var f = SafetensorsFile.Open(p);
        Assert.Equal([3.5f], f.ReadFloat32("s"));
        Assert.Empty(f.GetInfo("s").Shape);
        Assert.Equal(1, f.GetInfo("s").ElementCount);
        Assert.Empty(f.Read("empty").ToFloat64());
    }

    [Fact]
    public void UnknownName_Disposed_AndContains()
    {
        string p = PathOf("x.safetensors");
        SafetensorsWriter.Write(p, [SafetensorsTensor.FromInt32("i", [1, -2, 3], [3])]);
        var f = SafetensorsFile.Open(p);
        Assert.True(f.Contains("i"));
        Assert.False(f.Contains("j"));
        var ex = Assert.Throws<KeyNotFoundException>(() => f.Read("j"));
        Assert.Contains("'j'", ex.Message, StringComparison.Ordinal);
        Assert.Equal([1L, -2L, 3L], f.ReadInt64("i"));
        f.Dispose();
        f.Dispose(); // idempotent
        Assert.Throws<ObjectDisposedException>(() => f.Read("i"));
        using (new FileStream(p, FileMode.Open, FileAccess.ReadWrite, FileShare.None))
        {
        } // handle released
    }

    [Fact]
    public void Reader_AcceptsUnpaddedHeaderAndUnknownFields()
    {
        string json = "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2],\"extra\":[1]}}";
        string p = WriteBytes("unpadded.safetensors", BuildFile(json, [9, 8], pad: false));
        using var f = SafetensorsFile.Open(p);
        Assert.Equal([9L, 8L], f.ReadInt64("a"));
    }

    // ---- writer validation and atomicity ----

    [Fact]
    public void Writer_RejectsDuplicateAndReservedNames()
    {
        string p = PathOf("w.safetensors");
        var dup = Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(p,
            [SafetensorsTensor.FromUInt8("x", [1], [1]), SafetensorsTensor.FromUInt8("x", [2], [1])]));
        Assert.Contains("Duplicate tensor name 'x'", dup.Message, StringComparison.Ordinal);
        var reserved = Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(p, [SafetensorsTensor.FromUInt8("__metadata__", [1], [1])]));
        Assert.Contains("__metadata__", reserved.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(p, [SafetensorsTensor.FromUInt8("bad\ud800", [1], [1])]));
        Assert.False(File.Exists(p));
        Assert.Empty(Directory.GetFiles(Dir));
    }

    [Fact]
    public void Tensor_RejectsLengthMismatchAndNegativeDims()
    {
        var len = Assert.Throws<ArgumentException>(() => new SafetensorsTensor("t", SafetensorsDType.F32, [2, 3], new byte[20]));
        Assert.Contains("needs 24 bytes, but 20 bytes were given", len.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => SafetensorsTensor.FromFloat32("t", [1f, 2f], [3]));
        Assert.Throws<ArgumentException>(() => SafetensorsTensor.FromFloat32("t", [], [-1]));
        Assert.Throws<ArgumentException>(() => SafetensorsTensor.FromUInt8("t", [], [int.MaxValue, int.MaxValue, int.MaxValue]));
    }

    [Fact]
    public void AtomicWrite_FailureBeforeCommit_LeavesOldFileAndNoTemp()
    {
        string p = PathOf("model.safetensors");
        SafetensorsWriter.Write(p, [SafetensorsTensor.FromFloat32("old", [1f], [1])]);
        byte[] before = File.ReadAllBytes(p);
        string? seenTemp = null;

        Assert.Throws<IOException>(() => SafetensorsWriter.WriteCore(p, [SafetensorsTensor.FromFloat32("new", [2f, 3f], [2])], null,
            tmp =>
            {
                seenTemp = tmp;
                Assert.True(File.Exists(tmp));
                Assert.Equal(Dir, Path.GetDirectoryName(tmp));
                throw new IOException("simulated disk failure");
            }));

        Assert.NotNull(seenTemp);
        Assert.False(File.Exists(seenTemp));
        Assert.Equal(before, File.ReadAllBytes(p));
        Assert.Equal([p], Directory.GetFiles(Dir));
    }

    [Fact]
    public void AtomicWrite_SequenceThrowingMidway_LeavesOldFileAndNoTemp()
    {
        string p = PathOf("model.safetensors");
        SafetensorsWriter.Write(p, [SafetensorsTensor.FromFloat32("old", [1f], [1])]);
        byte[] before = File.ReadAllBytes(p);

        static IEnumerable<SafetensorsTensor> Broken()
        {
            yield return SafetensorsTensor.FromFloat32("a", [1f], [1]);
            throw new InvalidOperationException("producer failed");
        }

        Assert.Throws<InvalidOperationException>(() => SafetensorsWriter.Write(p, Broken()));
        Assert.Equal(before, File.ReadAllBytes(p));
        Assert.Equal([p], Directory.GetFiles(Dir));
    }

    [Fact]
    public void AtomicWrite_TargetIsADirectory_FailsOnMoveAndCleansUp()
    {
        string target = PathOf("adir");
        Directory.CreateDirectory(target);
        File.WriteAllText(Path.Combine(target, "keep.txt"), "x");

        Exception? ex = Record.Exception(() => SafetensorsWriter.Write(target, [SafetensorsTensor.FromUInt8("a", [1, 2], [2])]));
        Assert.True(ex is IOException or UnauthorizedAccessException, ex?.ToString());
        Assert.True(Directory.Exists(target));
        Assert.Equal("x", File.ReadAllText(Path.Combine(target, "keep.txt")));
        Assert.Empty(Directory.GetFiles(Dir)); // no temp file left next to it
    }

    [Fact]
    public void AtomicWrite_MissingDirectory_Throws()
    {
        string p = Path.Combine(Dir, "missing", "m.safetensors");
        Assert.Throws<DirectoryNotFoundException>(() => SafetensorsWriter.Write(p, []));
        Assert.Empty(Directory.GetFileSystemEntries(Dir));
    }

    [Fact]
    public void Write_OverwritesExistingFile_WhileAReaderHoldsTheOldOne()
    {
        Assert.SkipWhen(OperatingSystem.IsWindows(), "Windows cannot replace a file that is memory-mapped.");
        string p = PathOf("model.safetensors");
        SafetensorsWriter.Write(p, [SafetensorsTensor.FromFloat32("v", [1f], [1])]);
        using var oldFile = SafetensorsFile.Open(p);
        SafetensorsWriter.Write(p, [SafetensorsTensor.FromFloat32("v", [2f], [1])]);
        Assert.Equal([1f], oldFile.ReadFloat32("v")); // the old inode stays mapped (POSIX rename semantics)
        using var newFile = SafetensorsFile.Open(p);
        Assert.Equal([2f], newFile.ReadFloat32("v"));
        Assert.Equal([p], Directory.GetFiles(Dir));
    }
}
