using PureMoE.IO;

namespace PureMoE.Models;

/// <summary>
/// Hugging Face Mixtral-format model directories: config.json plus model.safetensors (or shards listed in
/// model.safetensors.index.json), tensors named like model.layers.0.block_sparse_moe.experts.3.w1.weight.
/// Saving is atomic for the whole directory: written to a temporary sibling, then swapped in by rename, so a
/// crash leaves either the old checkpoint or the new one, never a mix.
/// </summary>
public static class MixtralCheckpoint
{
    /// <summary>The weights file name.</summary>
    public const string WeightsFile = "model.safetensors";

    /// <summary>The index of sharded weights (weight_map: tensor name → shard file).</summary>
    public const string IndexFile = "model.safetensors.index.json";

    /// <summary>
    /// Prefix of tensors that hold router state (ReMoE's λ, C2R's collaboration lists) rather than weights; they are
    /// saved beside the weights and read by PureMoE.Moe, not loaded into the model's parameters.
    /// </summary>
    public const string RouterStatePrefix = "router_state.";

    /// <summary>
    /// Loads a model directory into a new model of the given dtype and device; <paramref name="moeFactory"/>
    /// builds the MoE sub-layers (default: Mixtral's plain softmax-top-k block).
    /// </summary>
    public static MixtralForCausalLM Load(string dir, DType dtype = DType.Float32, Device? device = null,
        MoeBlockFactory? moeFactory = null)
    {
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"{dir}: model directory not found");
        string configPath = Path.Combine(dir, "config.json");
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{configPath}: missing (a Mixtral-format model directory needs config.json)", configPath);
        var config = MixtralConfig.Load(configPath);
        // The files' headers give every name and shape; the data is read one tensor at a time, straight into its
        // parameter (a host float32 one from the mapped file, no copy between), so loading never holds the model twice.
        var files = OpenWeightFiles(dir);
        try
        {
            var where = FileOfEachTensor(files, name => !name.StartsWith(RouterStatePrefix, StringComparison.Ordinal));
            var shapes = where.ToDictionary(kv => kv.Key, kv => new Shape(kv.Value.GetInfo(kv.Key).Shape), StringComparer.Ordinal);
            // The architecture comes from the config; every weight then comes from the file (strict: all present,
            // no extras), so the model is built without drawing random weights it would only overwrite.
            MixtralForCausalLM model;
            using (Nn.RandomInit.Skip())
                model = new MixtralForCausalLM(config, new Rng(0), dtype, device, moeFactory);
            try
            {
                model.LoadStateDict(shapes, (name, parameter) => where[name].ReadInto(name, parameter));
            }
            catch (ArgumentException e)
            {
                throw new InvalidDataException($"{dir}: weights do not fit config.json: {e.Message}", e);
            }
            return model;
        }
        finally
        {
            foreach (var file in files) file.Dispose();
        }
    }

    /// <summary>
    /// The tensors of a model directory (from model.safetensors or the shards of its index) whose names pass
    /// <paramref name="filter"/> (all when null); the others are not read.
    /// </summary>
    public static Dictionary<string, Tensor> LoadWeights(string dir, Func<string, bool>? filter = null)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var files = OpenWeightFiles(dir);
        try
        {
            foreach (var (name, file) in FileOfEachTensor(files, filter ?? (_ => true)))
                result[name] = file.ReadTensor(name);
        }
        finally
        {
            foreach (var file in files) file.Dispose();
        }
        return result;
    }

    // Which file holds each tensor whose name passes the filter; a name in two shards is an error naming both.
    private static Dictionary<string, SafetensorsFile> FileOfEachTensor(List<SafetensorsFile> files, Func<string, bool> filter)
    {
        var where = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        foreach (var file in files)
            foreach (string name in file.Names)
            {
                if (!filter(name)) continue;
                if (where.TryGetValue(name, out var other))
                    throw new InvalidDataException($"tensor '{name}' is in both {other.FilePath} and {file.FilePath}");
                where[name] = file;
            }
        return where;
    }

    // model.safetensors, or every shard its index names, opened and validated (headers only).
    private static List<SafetensorsFile> OpenWeightFiles(string dir)
    {
        string single = Path.Combine(dir, WeightsFile), index = Path.Combine(dir, IndexFile);
        IEnumerable<string> paths = File.Exists(single) ? [single]
            : File.Exists(index) ? ShardFiles(index).Select(f => Path.Combine(dir, f))
            : throw new FileNotFoundException($"{dir}: neither {WeightsFile} nor {IndexFile} found", single);
        var files = new List<SafetensorsFile>();
        try
        {
            foreach (string path in paths) files.Add(SafetensorsFile.Open(path));
        }
        catch
        {
            foreach (var file in files) file.Dispose();
            throw;
        }
        return files;
    }

    private static IEnumerable<string> ShardFiles(string indexPath)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(indexPath));
        if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != System.Text.Json.JsonValueKind.Object)
            throw new InvalidDataException($"{indexPath}: no weight_map object");
        var files = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var entry in map.EnumerateObject())
        {
            string file = entry.Value.GetString() ?? throw new InvalidDataException($"{indexPath}: weight_map[{entry.Name}] is not a file name");
            if (file.Contains('/') || file.Contains('\\') || file.Contains(".."))
                throw new InvalidDataException($"{indexPath}: shard name '{file}' must be a plain file name");
            files.Add(file);
        }
        return files;
    }

    /// <summary>Saves config.json and model.safetensors (float32) into <paramref name="dir"/>, atomically.</summary>
    public static void Save(MixtralForCausalLM model, string dir, IReadOnlyDictionary<string, Tensor>? extraTensors = null)
    {
        AtomicDirectory.Write(dir, temp =>
        {
            model.Config.Save(Path.Combine(temp, "config.json"));
            // Each weight is written from its own memory (converted to float32 one at a time if it is not).
            var entries = model.StateDict().Select(kv => TensorIO.Entry(kv.Key, kv.Value, DType.Float32));
            if (extraTensors is not null) entries = entries.Concat(extraTensors.Select(kv => TensorIO.Entry(kv.Key, kv.Value)));
            SafetensorsWriter.WriteEntries(Path.Combine(temp, WeightsFile), entries, new Dictionary<string, string> { ["format"] = "pt" });
        });
    }
}
