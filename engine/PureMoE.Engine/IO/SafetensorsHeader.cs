using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace PureMoE.IO;

/// <summary>
/// Parses and fully validates the JSON header of a safetensors file. Every problem is reported as a
/// <see cref="SafetensorsFormatException"/> naming the file.
/// </summary>
internal sealed class SafetensorsHeader
{
    /// <summary>Largest accepted header (the reference implementation's limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private const string MetadataKey = "__metadata__";

    private SafetensorsHeader(Dictionary<string, SafetensorsTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>Validated tensor entries by name.</summary>
    public Dictionary<string, SafetensorsTensorInfo> Tensors { get; }

    /// <summary>The <c>__metadata__</c> map (empty when absent).</summary>
    public Dictionary<string, string> Metadata { get; }

    /// <summary>Parses <paramref name="json"/> and validates every entry against <paramref name="dataLength"/>.</summary>
    public static SafetensorsHeader Parse(ReadOnlyMemory<byte> json, long dataLength, string path)
    {
        if (!Utf8.IsValid(json.Span))
        {
            throw Fail(path, "header is not valid UTF-8");
        }

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = false, CommentHandling = JsonCommentHandling.Disallow, MaxDepth = 64 });
        }
        catch (JsonException ex)
        {
            throw new SafetensorsFormatException(path, $"header is not valid JSON ({ex.Message})", ex);
        }

        using (doc)
        {
            try
            {
                return ParseRoot(doc.RootElement, dataLength, path);
            }
            catch (InvalidOperationException ex)
            {
                // e.g. a string with an escaped lone surrogate that cannot be transcoded.
                throw new SafetensorsFormatException(path, $"header contains an invalid JSON string ({ex.Message})", ex);
            }
        }
    }

    private static SafetensorsHeader ParseRoot(JsonElement root, long dataLength, string path)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw Fail(path, $"header is not a JSON object (found {root.ValueKind})");
        }

        var tensors = new Dictionary<string, SafetensorsTensorInfo>(StringComparer.Ordinal);
        Dictionary<string, string>? metadata = null;
        foreach (JsonProperty prop in root.EnumerateObject())
        {
            if (prop.Name == MetadataKey)
            {
                if (metadata is not null)
                {
                    throw Fail(path, "duplicate \"__metadata__\" entry");
                }
                metadata = ParseMetadata(prop.Value, path);
                continue;
            }
            if (tensors.ContainsKey(prop.Name))
            {
                throw Fail(path, $"duplicate tensor name {Q(prop.Name)}");
            }
            tensors.Add(prop.Name, ParseEntry(prop.Name, prop.Value, dataLength, path));
        }

        CheckOverlaps(tensors.Values, path);
        return new SafetensorsHeader(tensors, metadata ?? new Dictionary<string, string>(StringComparer.Ordinal));
    }

    private static Dictionary<string, string> ParseMetadata(JsonElement value, string path)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        if (value.ValueKind == JsonValueKind.Null)
        {
            return result; // the reference implementation treats null as "no metadata"
        }
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw Fail(path, $"\"__metadata__\" is not a JSON object (found {value.ValueKind})");
        }
        foreach (JsonProperty p in value.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String)
            {
                throw Fail(path, $"metadata value for key {Q(p.Name)} is not a string (found {p.Value.ValueKind})");
            }
            if (!result.TryAdd(p.Name, p.Value.GetString()!))
            {
                throw Fail(path, $"duplicate metadata key {Q(p.Name)}");
            }
        }
        return result;
    }

    private static SafetensorsTensorInfo ParseEntry(string name, JsonElement entry, long dataLength, string path)
    {
        if (entry.ValueKind != JsonValueKind.Object)
        {
            throw Fail(path, $"entry for tensor {Q(name)} is not a JSON object (found {entry.ValueKind})");
        }

        JsonElement? dtypeEl = null, shapeEl = null, offsetsEl = null;
        foreach (JsonProperty p in entry.EnumerateObject())
        {
            ref JsonElement? slot = ref dtypeEl;
            switch (p.Name)
            {
                case "dtype": slot = ref dtypeEl; break;
                case "shape": slot = ref shapeEl; break;
                case "data_offsets": slot = ref offsetsEl; break;
                default: continue; // unknown fields are ignored, as in the reference implementation
            }
            if (slot is not null)
            {
                throw Fail(path, $"tensor {Q(name)} has a duplicate \"{p.Name}\" field");
            }
            slot = p.Value;
        }

        if (dtypeEl is not { } dt) { throw Fail(path, $"tensor {Q(name)} is missing the \"dtype\" field"); }
        if (shapeEl is not { } sh) { throw Fail(path, $"tensor {Q(name)} is missing the \"shape\" field"); }
        if (offsetsEl is not { } off) { throw Fail(path, $"tensor {Q(name)} is missing the \"data_offsets\" field"); }

        if (dt.ValueKind != JsonValueKind.String)
        {
            throw Fail(path, $"tensor {Q(name)}: \"dtype\" must be a string (found {dt.ValueKind})");
        }
        string dtypeName = dt.GetString()!;
        if (!SafetensorsDTypeExtensions.TryParseJsonName(dtypeName, out SafetensorsDType dtype))
        {
            throw Fail(path, $"tensor {Q(name)} has unsupported dtype {Q(dtypeName)} (supported: F32, F64, F16, BF16, I64, I32, U8, BOOL)");
        }

        if (sh.ValueKind != JsonValueKind.Array)
        {
            throw Fail(path, $"tensor {Q(name)}: \"shape\" must be an array (found {sh.ValueKind})");
        }
        int rank = sh.GetArrayLength();
        var dims = new long[rank];
        var shape = new int[rank];
        for (int i = 0; i < rank; i++)
        {
            long d = ReadNonNegativeInteger(sh[i], path, $"tensor {Q(name)}: shape dimension {i}");
            if (d > int.MaxValue)
            {
                throw Fail(path, $"tensor {Q(name)}: shape dimension {i} ({d}) exceeds the supported maximum {int.MaxValue}");
            }
            dims[i] = d;
            shape[i] = (int)d;
        }
        if (!SafetensorsCodec.TryGetElementCount(dims, out long count) ||
            !SafetensorsCodec.TryGetByteLength(count, dtype.ElementSize(), out long byteLength))
        {
            throw Fail(path, $"tensor {Q(name)}: shape [{string.Join(",", shape)}] overflows the element count / byte size");
        }

        if (off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
        {
            throw Fail(path, $"tensor {Q(name)}: \"data_offsets\" must be an array of two integers");
        }
        long begin = ReadNonNegativeInteger(off[0], path, $"tensor {Q(name)}: data_offsets begin");
        long end = ReadNonNegativeInteger(off[1], path, $"tensor {Q(name)}: data_offsets end");
        if (begin > end)
        {
            throw Fail(path, $"tensor {Q(name)}: data_offsets begin {begin} is greater than end {end}");
        }
        if (end > dataLength)
        {
            throw Fail(path, $"tensor {Q(name)}: data_offsets end {end} is beyond the data size {dataLength}");
        }
        if (end - begin != byteLength)
        {
            throw Fail(path,
                $"tensor {Q(name)}: shape [{string.Join(",", shape)}] with dtype {dtype.ToJsonName()} needs {byteLength} bytes, but data_offsets [{begin},{end}] span {end - begin} bytes (size mismatch)");
        }
        return new SafetensorsTensorInfo(name, dtype, shape, begin, end);
    }

    private static long ReadNonNegativeInteger(JsonElement el, string path, string what)
    {
        if (el.ValueKind != JsonValueKind.Number)
        {
            throw Fail(path, $"{what} is not an integer (found {el.ValueKind})");
        }
        if (!el.TryGetInt64(out long v))
        {
            string raw = el.GetRawText();
            bool integral = raw.AsSpan().TrimStart('-').IndexOfAnyExcept("0123456789") < 0;
            throw Fail(path, integral
                ? $"{what} ({Truncate(raw)}) is out of range"
                : $"{what} is not an integer ({Truncate(raw)})");
        }
        if (v < 0)
        {
            throw Fail(path, $"{what} is negative ({v})");
        }
        return v;
    }

    private static void CheckOverlaps(IEnumerable<SafetensorsTensorInfo> infos, string path)
    {
        // Zero-length ranges hold no bytes and cannot overlap anything.
        var ranges = infos.Where(i => i.ByteLength > 0).ToArray();
        Array.Sort(ranges, static (a, b) =>
        {
            int c = a.DataBegin.CompareTo(b.DataBegin);
            return c != 0 ? c : a.DataEnd.CompareTo(b.DataEnd);
        });
        SafetensorsTensorInfo? furthest = null;
        foreach (SafetensorsTensorInfo r in ranges)
        {
            if (furthest is not null && r.DataBegin < furthest.DataEnd)
            {
                throw Fail(path,
                    $"tensors {Q(furthest.Name)} [{furthest.DataBegin},{furthest.DataEnd}) and {Q(r.Name)} [{r.DataBegin},{r.DataEnd}) have overlapping data_offsets");
            }
            if (furthest is null || r.DataEnd > furthest.DataEnd)
            {
                furthest = r;
            }
        }
    }

    private static SafetensorsFormatException Fail(string path, string problem) => new(path, problem);

    /// <summary>Quotes a (possibly hostile, huge) name for an error message.</summary>
    private static string Q(string s) => "'" + Truncate(s) + "'";

    private static string Truncate(string s) =>
        s.Length <= 200 ? s : string.Concat(s.AsSpan(0, 200), "...(", s.Length.ToString(CultureInfo.InvariantCulture), " chars)");

    /// <summary>Strict UTF-8 without BOM, used to encode names when writing.</summary>
    internal static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
}
