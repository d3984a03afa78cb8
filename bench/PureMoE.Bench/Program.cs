using BenchmarkDotNet.Running;

namespace PureMoE.Bench;

/// <summary>Entry point: BenchmarkDotNet suites, or `quick ...` side-by-side measurements.</summary>
public static class Program
{
    /// <summary>
    /// The `quick` subcommands: fast warm-up + median measurements that print one JSON line with --json,
    /// for comparison against peer libraries. Add a new measurement by adding an entry here.
    /// </summary>
    private static readonly Dictionary<string, Func<QuickArgs, int>> QuickCommands = new(StringComparer.Ordinal)
    {
        ["gemm"] = GemmQuick.Run,
        ["exchange"] = ExchangeQuick.Run,
        ["moe"] = MoeQuick.Run,
        ["indexadd"] = IndexAddQuick.Run,
        ["argsort"] = ArgSortQuick.Run,
        ["attention"] = AttentionQuick.Run,
        ["decode"] = DecodeQuick.Run,
    };

    /// <summary>Runs the benchmark named on the command line.</summary>
    public static int Main(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            PrintUsage();
            return args.Length == 0 ? 2 : 0;
        }

        if (args[0] != "quick")
        {
            BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
            return 0;
        }

        if (args.Length < 2 || !QuickCommands.TryGetValue(args[1], out Func<QuickArgs, int>? command))
        {
            PrintUsage();
            return 2;
        }

        try
        {
            return command(QuickArgs.Parse(args.AsSpan(2)));
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine(e.Message);
            PrintUsage();
            return 2;
        }
    }

    private static void PrintUsage()
    {
        Console.Error.WriteLine("usage:");
        Console.Error.WriteLine("  PureMoE.Bench quick <command> [options]   commands: " + string.Join(", ", QuickCommands.Keys));
        Console.Error.WriteLine("  PureMoE.Bench quick gemm --n N [--m M --k K] [--ta] [--tb] [--json] [--repeats R] [--warmup W] [--device D]");
        Console.Error.WriteLine("                          device only: [--kernel auto|tiled|medium|large] [--split-k auto|S] [--checks C]");
        Console.Error.WriteLine("  PureMoE.Bench quick moe [--tokens T --d D --ff F --experts E --k K --router topk|rectify|relu|c2r] [--json] [--repeats R] [--warmup W] [--device D]");
        Console.Error.WriteLine("                          device only: [--kernel auto|tiled|medium|large] [--grouped auto|on|64|off]");
        Console.Error.WriteLine("  PureMoE.Bench quick indexadd [--axis A --count C --inner I --outer O] [--direct|--sorted] [--json] [--repeats R] [--warmup W] [--device D]");
        Console.Error.WriteLine("  PureMoE.Bench quick argsort [--rows R --n N] [--ranks|--radix] [--json] [--repeats R] [--warmup W] [--device D]");
        Console.Error.WriteLine("  PureMoE.Bench quick attention [--batch B --heads H --kv-heads K --seq S --dim D] [--block N] [--kernel auto|products|tiles] [--forward] [--json] [--repeats R] [--warmup W] [--device D]");
        Console.Error.WriteLine("  PureMoE.Bench quick decode [--hidden D --ff F --layers L --heads H --kv-heads K --experts E --k K] [--prompt P] [--tokens N] [--json] [--repeats R] [--device D]");
        Console.Error.WriteLine("  devices (--device): cpu (default), cuda[:N], ilgpu-cpu, ilgpu-wide (the emulator shaped like CUDA), opencl[:N]");
        Console.Error.WriteLine("  PureMoE.Bench [BenchmarkDotNet args, e.g. --filter '*Gemm*']");
    }
}
