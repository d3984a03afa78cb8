using System.Buffers.Binary;
using PureMoE.IO;

namespace PureMoE.Engine.Tests.IO;

/// <summary>One test per validation rule of <see cref="SafetensorsFile.Open"/>.</summary>
public sealed class SafetensorsCorruptFileTests : SafetensorsTestBase
{
    private const string F32A = "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}";

    [Fact]
    public void EmptyFile_IsTooShort() => AssertCorrupt(WriteBytes("empty.safetensors", []), "file is too short");

    [Fact]
    public void FileShorterThan8Bytes_IsTooShort() =>
        AssertCorrupt(WriteBytes("short.safetensors", [1, 0, 0, 0, 0]), "file is too short: 5 bytes");

    [Fact]
    public void HeaderLengthBeyondFile_IsRejected()
    {
        byte[] file = BuildFile("{}", []);
        BinaryPrimitives.WriteUInt64LittleEndian(file, 100);
        AssertCorrupt(WriteBytes("beyond.safetensors", file), "header length 100 exceeds the remaining file size (8 bytes)");
    }

    [Fact]
    public void AbsurdHeaderLength_HitsThe100MbCap()
    {
        byte[] file = BuildFile("{}", []);
        BinaryPrimitives.WriteUInt64LittleEndian(file, 200_000_000);
        AssertCorrupt(WriteBytes("cap.safetensors", file), "exceeds the 100 MB limit");
    }

    [Fact]
    public void MaxUInt64HeaderLength_DoesNotOverflow()
    {
        byte[] file = BuildFile("{}", []);
        BinaryPrimitives.WriteUInt64LittleEndian(file, ulong.MaxValue);
        AssertCorrupt(WriteBytes("max.safetensors", file), "exceeds the 100 MB limit");
    }

    [Fact]
    public void HeaderNotUtf8_IsRejected()
    {
        byte[] file = BuildFile("{\"a\":1}", []);
        file[10] = 0xFF;
        AssertCorrupt(WriteBytes("utf8.safetensors", file), "header is not valid UTF-8");
    }

    [Fact]
    public void EscapedLoneSurrogate_IsRejectedNotCrashing() =>
        AssertCorrupt(WriteBytes("surrogate.safetensors", BuildFile("{\"__metadata__\":{\"k\":\"\\ud800\"}}", [])), "invalid JSON string");

    /// <summary>(file name, header JSON, data length, expected phrase).</summary>
    public static TheoryData<string, string, int, string> HeaderCases => new()
    {
        { "notjson", "{\"a\":", 0, "header is not valid JSON" },
        { "trailingcomma", "{" + F32A + ",}", 4, "header is not valid JSON" },
        { "notobject", "[1,2]", 0, "header is not a JSON object (found Array)" },
        { "entrynotobject", "{\"a\":5}", 0, "entry for tensor 'a' is not a JSON object" },
        { "missingdtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a' is missing the \"dtype\" field" },
        { "missingshape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'a' is missing the \"shape\" field" },
        { "missingoffsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'a' is missing the \"data_offsets\" field" },
        { "dtypenotstring", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"dtype\" must be a string" },
        { "shapenotarray", "{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4, "\"shape\" must be an array" },
        { "offsetsnotpair", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "\"data_offsets\" must be an array of two integers" },
        { "offsetsnotarray", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"b\":0}}}", 4, "\"data_offsets\" must be an array of two integers" },
        { "offsetstring", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4, "data_offsets end is not an integer" },
        { "offsetnegative", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "data_offsets begin is negative" },
        { "offsethuge", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999999]}}", 4, "data_offsets end (99999999999999999999999) is out of range" },
        { "unknowndtype", "{\"a\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "unsupported dtype 'I8'" },
        { "lowercasedtype", "{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unsupported dtype 'f32'" },
        { "negativedim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", 4, "shape dimension 1 is negative (-1)" },
        { "fractionaldim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape dimension 0 is not an integer (1.5)" },
        { "dimnotnumber", "{\"a\":{\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,4]}}", 4, "shape dimension 0 is not an integer (found Null)" },
        { "dimtoolarge", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3000000000],\"data_offsets\":[0,4]}}", 4, "exceeds the supported maximum 2147483647" },
        { "shapeoverflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,2147483647],\"data_offsets\":[0,4]}}", 4, "overflows the element count" },
        { "bytesizeoverflow", "{\"a\":{\"dtype\":\"F64\",\"shape\":[2147483647,2147483647,2],\"data_offsets\":[0,4]}}", 4, "overflows the element count / byte size" },
        { "beginafterend", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8, "data_offsets begin 8 is greater than end 4" },
        { "endbeyonddata", "{\"a\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 4, "data_offsets end 400 is beyond the data size 4" },
        { "sizemismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, "needs 8 bytes, but data_offsets [0,4] span 4 bytes (size mismatch)" },
        { "overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "tensors 'a' [0,8) and 'b' [4,12) have overlapping data_offsets" },
        { "contained", "{\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[5,6]},\"a\":{\"dtype\":\"U8\",\"shape\":[12],\"data_offsets\":[0,12]},\"c\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[12,14]}}", 14, "'a' [0,12) and 'b' [5,6) have overlapping data_offsets" },
        { "duplicatename", "{" + F32A + "," + F32A + "}", 4, "duplicate tensor name 'a'" },
        { "duplicatefield", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "duplicate \"dtype\" field" },
        { "metadatanotobject", "{\"__metadata__\":[\"x\"]}", 0, "\"__metadata__\" is not a JSON object" },
        { "metadatavaluenotstring", "{\"__metadata__\":{\"format\":\"pt\",\"n\":1}}", 0, "metadata value for key 'n' is not a string (found Number)" },
        { "metadatavaluenull", "{\"__metadata__\":{\"k\":null}}", 0, "metadata value for key 'k' is not a string (found Null)" },
    };

    [Theory]
    [MemberData(nameof(HeaderCases))]
    public void CorruptHeader_IsRejectedWithSpecificMessage(string file, string json, int dataLength, string phrase) =>
        AssertCorrupt(WriteBytes(file + ".safetensors", BuildFile(json, new byte[dataLength])), phrase);

    [Fact]
    public void HugeHostileName_IsTruncatedInMessage()
    {
        string name = new('x', 10_000);
        string json = "{\"" + name + "\":{\"dtype\":\"XX\",\"shape\":[],\"data_offsets\":[0,0]}}";
        var ex = AssertCorrupt(WriteBytes("longname.safetensors", BuildFile(json, [])), "unsupported dtype 'XX'");
        Assert.True(ex.Message.Length < 1_000, "message should truncate hostile names");
    }

    [Fact]
    public void DeeplyNestedJson_IsRejectedNotCrashing()
    {
        string json = "{\"a\":" + new string('[', 10_000) + new string(']', 10_000) + "}";
        AssertCorrupt(WriteBytes("deep.safetensors", BuildFile(json, [])), "header is not valid JSON");
    }

    [Fact]
    public void MetadataNull_IsAcceptedAsEmpty()
    {
        string p = WriteBytes("nullmeta.safetensors", BuildFile("{\"__metadata__\":null}", []));
        using var f = SafetensorsFile.Open(p);
        Assert.Empty(f.Metadata);
        Assert.Empty(f.Names);
    }

    [Fact]
    public void FormatException_IsAnIOException()
    {
        var ex = new SafetensorsFormatException("/x/y.safetensors", "boom");
        Assert.IsAssignableFrom<IOException>(ex);
        Assert.Equal("Invalid safetensors file '/x/y.safetensors': boom", ex.Message);
        Assert.Equal("boom", ex.Problem);
    }
}
