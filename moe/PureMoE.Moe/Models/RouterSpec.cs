using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Models;

/// <summary>
/// Which router a model uses and with what options: the "router" object of config.json
/// (<c>{"name": "rectify", "k": 1, "capacity_factor": 1.0, ...}</c>) and the router flags of the CLI
/// (<c>--router rectify --k 1 --capacity-factor 1.0</c>) both become one of these. Option names are snake_case;
/// values are strings parsed per option, so the two sources share one parser and one set of error messages.
/// </summary>
public sealed record RouterSpec
{
    /// <summary>Router name: topk, rectify, relu or c2r.</summary>
    public string Name { get; init; } = "topk";

    /// <summary>Options by snake_case name, values as text.</summary>
    public IReadOnlyDictionary<string, string> Options { get; init; } = new Dictionary<string, string>();

    /// <summary>The options each router accepts.</summary>
    public static IReadOnlyDictionary<string, string[]> KnownOptions { get; } = new Dictionary<string, string[]>
    {
        ["topk"] = ["k", "normalization", "capacity_factor", "drop_policy", "pad_to_capacity", "straight_through", "aux_loss", "z_loss"],
        ["rectify"] = ["k", "capacity_factor", "intra_gpu", "unrouted", "fill_in", "fill_priority", "aux_loss", "z_loss"],
        ["relu"] = ["k", "initial_lambda", "alpha", "per_layer_lambda"],
        ["c2r"] = ["k", "candidates", "weighting", "selected_scale"],
    };

    /// <summary>Creates a spec, checking the name and that every option belongs to that router.</summary>
    public static RouterSpec Create(string name, IReadOnlyDictionary<string, string>? options = null, string source = "router")
    {
        string n = name.Trim().ToLowerInvariant();
        if (!KnownOptions.TryGetValue(n, out var known))
            throw new ArgumentException($"{source}: unknown router '{name}' (choose one of: {string.Join(", ", KnownOptions.Keys)})");
        var opts = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in options ?? new Dictionary<string, string>())
        {
            string k = key.Replace('-', '_').ToLowerInvariant();
            if (!known.Contains(k))
                throw new ArgumentException($"{source}: router '{n}' has no option '{key}' (its options: {string.Join(", ", known)})");
            opts[k] = value;
        }
        var spec = new RouterSpec { Name = n, Options = opts };
        spec.CheckValues(source);
        return spec;
    }

    /// <summary>Parses the "router" object of config.json.</summary>
    public static RouterSpec Parse(string json, string source = "config.json router")
    {
        if (JsonNode.Parse(json) is not JsonObject obj) throw new ArgumentException($"{source}: must be a JSON object");
        string name = obj["name"]?.GetValue<string>() ?? throw new ArgumentException($"{source}: missing 'name'");
        var options = new Dictionary<string, string>();
        foreach (var (key, node) in obj)
        {
            if (key == "name" || node is null) continue;
            options[key] = node.GetValueKind() == JsonValueKind.String ? node.GetValue<string>() : node.ToJsonString();
        }
        return Create(name, options, source);
    }

    /// <summary>The "router" object for config.json (numbers and booleans as JSON values).</summary>
    public string ToJson()
    {
        var obj = new JsonObject { ["name"] = Name };
        foreach (var (key, value) in Options.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double d)) obj[key] = d;
            else if (bool.TryParse(value, out bool b)) obj[key] = b;
            else obj[key] = value;
        }
        return obj.ToJsonString();
    }

    /// <summary>Mixtral's own routing: softmax over all experts, top-k, renormalised, no capacity.</summary>
    public static RouterSpec MixtralDefault => Create("topk");

    // ---------------------------------------------------------------- building routers

    /// <summary>
    /// One router per MoE layer. <paramref name="defaultK"/> (config's num_experts_per_tok) applies when the spec
    /// has no "k". ReLU routers share one λ unless per_layer_lambda; C2R needs each layer's collaboration profile.
    /// </summary>
    public IReadOnlyList<IRouter> Build(int layers, int experts, int defaultK, IReadOnlyList<CollaborationProfile>? profiles = null)
    {
        switch (Name)
        {
            case "topk":
                var topk = TopK(defaultK);
                return Enumerable.Range(0, layers).Select(_ => (IRouter)new TopKRouter(experts, topk)).ToArray();
            case "rectify":
                var rectify = Rectify(defaultK);
                return Enumerable.Range(0, layers).Select(_ => (IRouter)new RectifyRouter(experts, rectify)).ToArray();
            case "relu":
                return ReluRouter.ForLayers(layers, experts, Relu(defaultK), Bool("per_layer_lambda", false)).ToArray<IRouter>();
            default:
                if (profiles is null || profiles.Count != layers)
                    throw new ArgumentException($"router c2r: needs a collaboration profile per layer ({layers}), got {profiles?.Count ?? 0}; profile a trained model first");
                var c2r = C2R(defaultK, experts);
                return profiles.Select(p => (IRouter)new C2RRouter(p, c2r)).ToArray();
        }
    }

    /// <summary>The TopK options this spec describes.</summary>
    public TopKOptions TopK(int defaultK) => new()
    {
        K = Int("k", defaultK),
        Normalization = Enum("normalization", TopKNormalization.SoftmaxRenorm),
        CapacityFactor = NullableDouble("capacity_factor"),
        DropPolicy = Enum("drop_policy", DropPolicy.Probs),
        PadToCapacity = Bool("pad_to_capacity", false),
        StraightThroughTop1 = Bool("straight_through", false),
        AuxLossCoeff = Double("aux_loss", 0),
        ZLossCoeff = Double("z_loss", 0),
    };

    /// <summary>The Rectify options this spec describes.</summary>
    public RectifyOptions Rectify(int defaultK) => new()
    {
        K = Int("k", defaultK),
        CapacityFactor = Double("capacity_factor", 1.0),
        IntraGpu = Bool("intra_gpu", true),
        Unrouted = Enum("unrouted", UnroutedPolicy.All),
        FillIn = Bool("fill_in", true),
        FillPriority = Enum("fill_priority", FillPriority.Score),
        AuxLossCoeff = Double("aux_loss", 0),
        ZLossCoeff = Double("z_loss", 0),
    };

    /// <summary>The ReMoE options this spec describes.</summary>
    public ReluRouterOptions Relu(int defaultK) => new()
    {
        K = Int("k", defaultK),
        InitialLambda = (float)Double("initial_lambda", 1e-8),
        Alpha = (float)Double("alpha", 1.2),
    };

    /// <summary>The C2R options this spec describes (T defaults to E/P − 1 style small lists: here E − 1 unless given).</summary>
    public C2ROptions C2R(int defaultK, int experts) => new()
    {
        K = Int("k", defaultK),
        Candidates = Int("candidates", experts - 1),
        Weighting = Enum("weighting", C2RWeighting.FullSoftmax),
        SelectedScale = Double("selected_scale", 1.0),
    };

    // Parse every present option once so a bad value fails at load time, naming the option.
    private void CheckValues(string source)
    {
        try
        {
            switch (Name)
            {
                case "topk": TopK(1); break;
                case "rectify": Rectify(1); break;
                case "relu": Relu(1); Bool("per_layer_lambda", false); break;
                default: C2R(1, 2); break;
            }
        }
        catch (FormatException e)
        {
            throw new ArgumentException($"{source}: {e.Message}", e);
        }
    }

    private string? Get(string key) => Options.TryGetValue(key, out var v) ? v : null;

    private int Int(string key, int fallback) => Get(key) is string v
        ? int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) ? i : throw new FormatException($"option {key} = '{v}' is not an integer")
        : fallback;

    private double Double(string key, double fallback) => Get(key) is string v
        ? double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) ? d : throw new FormatException($"option {key} = '{v}' is not a number")
        : fallback;

    private double? NullableDouble(string key) => Get(key) is string v && v != "none" && v != "null" ? Double(key, 0) : null;

    private bool Bool(string key, bool fallback) => Get(key) is string v
        ? bool.TryParse(v, out bool b) ? b : throw new FormatException($"option {key} = '{v}' is not true or false")
        : fallback;

    private T Enum<T>(string key, T fallback) where T : struct, System.Enum
    {
        if (Get(key) is not string v) return fallback;
        string wanted = v.Replace("_", "").Replace("-", "");
        foreach (T value in System.Enum.GetValues<T>())
            if (string.Equals(value.ToString(), wanted, StringComparison.OrdinalIgnoreCase)) return value;
        string choices = string.Join(", ", System.Enum.GetNames<T>().Select(SnakeCase));
        throw new FormatException($"option {key} = '{v}' is not one of: {choices}");
    }

    private static string SnakeCase(string pascal) =>
        string.Concat(pascal.Select((c, i) => i > 0 && char.IsUpper(c) && !char.IsDigit(pascal[i - 1]) ? "_" + char.ToLowerInvariant(c) : char.ToLowerInvariant(c).ToString()));
}
