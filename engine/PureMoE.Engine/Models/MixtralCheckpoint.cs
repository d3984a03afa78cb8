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
        var tensors = LoadWeights(dir);
        // The architecture comes from the config; every weight then comes from the file (strict: all present, no extras).
        var model = new MixtralForCausalLM(config, new Rng(0), dtype, device, moeFactory);
        var converted = tensors.Where(kv => !kv.Key.StartsWith(RouterStatePrefix, StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv =>
        {
            var t = kv.Value.DType == dtype ? kv.Value : kv.Value.To(dtype);
            return device is null ? t : t.To(device);
        });
        try
        {
            model.LoadStateDict(converted);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{dir}: weights do not fit config.json: {e.Message}", e);
        }
        return model;
    }

    /// <summary>
    /// The tensors of a model directory (from model.safetensors or the shards of its index) whose names pass
    /// <paramref name="filter"/> (all when null); the others are not read.
    /// </summary>
    public static Dictionary<string, Tensor> LoadWeights(string dir, Func<string, bool>? filter = null)
    {
        string single = Path.Combine(dir, WeightsFile), index = Path.Combine(dir, IndexFile);
        IEnumerable<string> files = File.Exists(single) ? [single]
            : File.Exists(index) ? ShardFiles(index).Select(f => Path.Combine(dir, f))
            : throw new FileNotFoundException($"{dir}: neither {WeightsFile} nor {IndexFile} found", single);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (string path in files)
        {
            using var file = SafetensorsFile.Open(path);
            foreach (string name in file.Names)
                if (filter is null || filter(name)) result[name] = file.Read(name).ToTensor();
        }
        return result;
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
            var tensors = model.StateDict().Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.DType == DType.Float32 ? kv.Value : kv.Value.To(DType.Float32)));
            if (extraTensors is not null) tensors = tensors.Concat(extraTensors);
            TensorIO.Save(Path.Combine(temp, WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        });
    }
}
