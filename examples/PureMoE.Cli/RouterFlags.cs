using System.CommandLine;
using PureMoE.Moe.Models;

namespace PureMoE.Cli;

/// <summary>
/// The --router flag and one flag per router option (--k, --capacity-factor, --fill-in, ...), shared by the commands
/// that build routers. Flags map one to one onto <see cref="RouterSpec"/> options (dashes become underscores).
/// </summary>
public sealed class RouterFlags
{
    private readonly Option<string> _router;
    private readonly List<Option<string?>> _options = [];

    /// <summary>Adds the flags to <paramref name="command"/>.</summary>
    public RouterFlags(Command command, string defaultRouter = "topk", bool includeK = true)
    {
        _router = new Option<string>("--router")
        {
            Description = "router: topk | rectify | relu | c2r",
            DefaultValueFactory = _ => defaultRouter,
        };
        command.Options.Add(_router);
        var names = RouterSpec.KnownOptions.Values.SelectMany(o => o).Distinct().Where(o => includeK || o != "k");
        foreach (string name in names)
        {
            var routers = RouterSpec.KnownOptions.Where(kv => kv.Value.Contains(name)).Select(kv => kv.Key);
            var option = new Option<string?>("--" + name.Replace('_', '-'))
            {
                Description = $"router option {name} ({string.Join(", ", routers)})",
            };
            _options.Add(option);
            command.Options.Add(option);
        }
    }

    /// <summary>The router flags given on the command line as option name → text ("router" for --router).</summary>
    public IEnumerable<KeyValuePair<string, string>> GivenValues(ParseResult result)
    {
        if (result.GetResult(_router) is { Implicit: false }) yield return new("router", result.GetValue(_router)!);
        foreach (var option in _options)
            if (result.GetValue(option) is string v)
                yield return new(option.Name.TrimStart('-').Replace('-', '_'), v);
    }

    /// <summary>The spec the given flags describe (only flags given on the command line become options).</summary>
    public RouterSpec Spec(ParseResult result, IReadOnlyDictionary<string, string>? extra = null)
    {
        var values = new Dictionary<string, string>(extra ?? new Dictionary<string, string>());
        foreach (var option in _options)
            if (result.GetValue(option) is string v)
                values[option.Name.TrimStart('-').Replace('-', '_')] = v;
        // Options that belong to another router than the chosen one are an error, naming the option.
        return RouterSpec.Create(result.GetValue(_router)!, values, "--router");
    }
}
