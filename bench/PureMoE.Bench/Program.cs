namespace PureMoE.Bench;

/// <summary>Entry point: BenchmarkDotNet suites, or `quick ...` side-by-side measurements.</summary>
public static class Program
{
    /// <summary>Runs the benchmark named on the command line.</summary>
    public static int Main(string[] args)
    {
        Console.Error.WriteLine("usage: PureMoE.Bench quick gemm --n N [--json] | PureMoE.Bench [BenchmarkDotNet args]");
        return args.Length == 0 ? 2 : 0;
    }
}
