namespace PureMoE.Cli;

/// <summary>The `puremoe` command-line tool.</summary>
public static class Program
{
    /// <summary>Dispatches to the sub-command named first on the command line.</summary>
    public static int Main(string[] args)
    {
        Console.Error.WriteLine("usage: puremoe <train|eval> [options]");
        return 2;
    }
}
