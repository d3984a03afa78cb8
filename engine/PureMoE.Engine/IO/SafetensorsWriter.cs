using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace PureMoE.IO;

/// <summary>
/// Writes safetensors files byte-for-byte like the reference (Rust/Python) implementation: tensors
/// ordered by descending dtype alignment then by name (UTF-8 byte order), compact JSON header with
/// <c>__metadata__</c> first, padded with spaces to a multiple of 8 bytes, data packed contiguously.
/// </summary>
public static class SafetensorsWriter
{
    private const string MetadataKey = "__metadata__";

    /// <summary>
    /// Atomically writes <paramref name="tensors"/> to <paramref name="path"/>: the file is written to
    /// a temporary file in the same directory, flushed to disk, then moved over <paramref name="path"/>.
    /// On any failure the temporary file is deleted and an existing file at <paramref name="path"/> is
    /// left untouched.
    /// </summary>
    /// <param name="path">Destination file (overwritten if it exists).</param>
    /// <param name="tensors">Tensors to write; names must be unique and not <c>__metadata__</c>.</param>
    /// <param name="metadata">Optional string→string metadata (omitted from the header when null or empty;
    /// keys are written in UTF-8 byte order).</param>
    /// <exception cref="ArgumentException">Duplicate or reserved names, invalid Unicode, null entries,
    /// or a tensor whose data length does not match its shape and dtype.</exception>
    /// <exception cref="IOException">The file could not be written or moved into place.</exception>
    public static void Write(string path, IEnumerable<SafetensorsTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        WriteCore(path, tensors, metadata, beforeCommit: null);

    /// <summary>Implementation of <see cref="Write"/>; <paramref name="beforeCommit"/> (tests only) runs
    /// with the temporary path after the data is flushed and before the move.</summary>
    internal static void WriteCore(string path, IEnumerable<SafetensorsTensor> tensors,
        IReadOnlyDictionary<string, string>? metadata, Action<string>? beforeCommit)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        WriteEntries(path, tensors.Select(t => t is null
            ? throw new ArgumentException("The tensor sequence contains a null entry.", nameof(tensors))
            : new SafetensorsEntry(t.Name, t.DType, t.Shape, t.Data.Length, stream => stream.Write(t.Data.Span))), metadata, beforeCommit);
    }

    /// <summary>
    /// <see cref="Write"/> for entries whose data is produced while the file is written, one entry at a time, so the
    /// caller never holds a byte copy of everything (a model's tensors are written from their own memory).
    /// </summary>
    internal static void WriteEntries(string path, IEnumerable<SafetensorsEntry> tensors,
        IReadOnlyDictionary<string, string>? metadata, Action<string>? beforeCommit = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);

        (SafetensorsEntry[] ordered, byte[] header, long dataLength) = Prepare(tensors, metadata);

        string fullPath = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(fullPath) ?? throw new ArgumentException($"Path '{path}' has no directory.", nameof(path));
        string tempPath = Path.Combine(directory, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1 << 16))
            {
                Span<byte> lengthBytes = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(lengthBytes, (ulong)header.Length);
                stream.Write(lengthBytes);
                stream.Write(header);
                foreach (SafetensorsEntry t in ordered)
                {
                    long start = stream.Position;
                    t.WriteData(stream);
                    if (stream.Position - start != t.ByteLength)
                    {
                        throw new IOException($"Internal error writing '{fullPath}': tensor '{t.Name}' wrote {stream.Position - start} bytes, expected {t.ByteLength}.");
                    }
                }
                long expected = 8L + header.Length + dataLength;
                if (stream.Position != expected)
                {
                    throw new IOException($"Internal error writing '{fullPath}': wrote {stream.Position} bytes, expected {expected}.");
                }
                stream.Flush(flushToDisk: true);
            }
            beforeCommit?.Invoke(tempPath);
            File.Move(tempPath, fullPath, overwrite: true);
        }
        catch
        {
            TryDelete(tempPath);
            throw;
        }
    }

    /// <summary>Validates and orders the tensors and builds the padded header bytes.</summary>
    internal static (SafetensorsEntry[] Ordered, byte[] Header, long DataLength) Prepare(
        IEnumerable<SafetensorsEntry> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        var items = new List<(SafetensorsEntry Tensor, byte[] NameUtf8)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (SafetensorsEntry? t in tensors)
        {
            if (t is null)
            {
                throw new ArgumentException("The tensor sequence contains a null entry.", nameof(tensors));
            }
            if (t.Name == MetadataKey)
            {
                throw new ArgumentException("A tensor may not be named '__metadata__' (reserved for the metadata map).", nameof(tensors));
            }
            if (!seen.Add(t.Name))
            {
                throw new ArgumentException($"Duplicate tensor name '{t.Name}'.", nameof(tensors));
            }
            long expected = SafetensorsCodec.CheckedByteLength(t.Shape, t.DType, nameof(tensors));
            if (expected != t.ByteLength)
            {
                throw new ArgumentException(
                    $"Tensor '{t.Name}': data length {t.ByteLength} does not match shape [{string.Join(",", t.Shape)}] × {t.DType.ToJsonName()} size ({expected} bytes).",
                    nameof(tensors));
            }
            items.Add((t, EncodeName(t.Name, "tensor name")));
        }

        items.Sort(static (a, b) =>
        {
            int c = b.Tensor.DType.AlignmentRank().CompareTo(a.Tensor.DType.AlignmentRank());
            return c != 0 ? c : a.NameUtf8.AsSpan().SequenceCompareTo(b.NameUtf8);
        });

        var json = new StringBuilder();
        json.Append('{');
        bool first = true;
        if (metadata is { Count: > 0 })
        {
            var entries = new List<(byte[] KeyUtf8, string Key, string Value)>();
            foreach (KeyValuePair<string, string> kv in metadata)
            {
                if (kv.Key is null || kv.Value is null)
                {
                    throw new ArgumentException("Metadata keys and values must not be null.", nameof(metadata));
                }
                entries.Add((EncodeName(kv.Key, "metadata key"), kv.Key, kv.Value));
                _ = EncodeName(kv.Value, "metadata value");
            }
            entries.Sort(static (a, b) => a.KeyUtf8.AsSpan().SequenceCompareTo(b.KeyUtf8));
            AppendString(json, MetadataKey).Append(":{");
            for (int i = 0; i < entries.Count; i++)
            {
                if (i > 0)
                {
                    json.Append(',');
                }
                AppendString(json, entries[i].Key).Append(':');
                AppendString(json, entries[i].Value);
            }
            json.Append('}');
            first = false;
        }

        long offset = 0;
        var ordered = new SafetensorsEntry[items.Count];
        for (int i = 0; i < items.Count; i++)
        {
            SafetensorsEntry t = items[i].Tensor;
            ordered[i] = t;
            if (!first)
            {
                json.Append(',');
            }
            first = false;
            AppendString(json, t.Name).Append(":{\"dtype\":");
            AppendString(json, t.DType.ToJsonName()).Append(",\"shape\":[");
            json.AppendJoin(',', t.Shape.Select(d => d.ToString(CultureInfo.InvariantCulture)));
            long end = offset + t.ByteLength;
            json.Append("],\"data_offsets\":[")
                .Append(offset.ToString(CultureInfo.InvariantCulture)).Append(',')
                .Append(end.ToString(CultureInfo.InvariantCulture)).Append("]}");
            offset = end;
        }
        json.Append('}');
        byte[] raw = SafetensorsHeader.StrictUtf8.GetBytes(json.ToString());
        int padding = (8 - raw.Length % 8) % 8;
        byte[] header = new byte[raw.Length + padding];
        raw.CopyTo(header, 0);
        header.AsSpan(raw.Length).Fill((byte)' ');
        return (ordered, header, offset);
    }

    /// <summary>Appends a JSON string literal escaped exactly like serde_json (the reference writer).</summary>
    private static StringBuilder AppendString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c < 0x20)
                    {
                        sb.Append("\\u00").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        sb.Append(c);
                    }
                    break;
            }
        }
        return sb.Append('"');
    }

    private static byte[] EncodeName(string s, string what)
    {
        try
        {
            return SafetensorsHeader.StrictUtf8.GetBytes(s);
        }
        catch (EncoderFallbackException ex)
        {
            throw new ArgumentException($"The {what} '{s}' is not valid Unicode (it contains a lone surrogate).", ex);
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
            // Best effort: the original exception is more useful than a cleanup failure.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

/// <summary>
/// One tensor for <see cref="SafetensorsWriter.WriteEntries"/>: its header fields and a callback that writes exactly
/// <paramref name="ByteLength"/> bytes of little-endian data.
/// </summary>
internal sealed record SafetensorsEntry(string Name, SafetensorsDType DType, int[] Shape, long ByteLength, Action<Stream> WriteData);
