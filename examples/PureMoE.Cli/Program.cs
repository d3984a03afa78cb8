using System.CommandLine;

namespace PureMoE.Cli;

/// <summary>The `puremoe` command-line tool: train, compare, generate, inspect, perplexity, eval, route.</summary>
public static class Program
{
    /// <summary>Parses the command line and runs the sub-command.</summary>
    public static int Main(string[] args) => BuildRoot().Parse(args).Invoke();

    /// <summary>The root command with every sub-command (also used by tests).</summary>
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("PureMoE: Mixture-of-Experts language models in pure .NET");
        root.Subcommands.Add(TrainCommand.Build());
        root.Subcommands.Add(EvalCommand.Build());
        root.Subcommands.Add(RouteCommand.Build());
        root.Subcommands.Add(CompareCommand.Build());
        root.Subcommands.Add(GenerateCommand.Build());
        root.Subcommands.Add(InspectCommand.Build());
        root.Subcommands.Add(PerplexityCommand.Build());
        return root;
    }
}
