using PureMoE.IO;

namespace PureMoE.Cli;

/// <summary>An error meant for the user: printed as one line, exit code 1, no stack trace.</summary>
public sealed class CliException(string message) : Exception(message);

/// <summary>Runs a command body and turns expected failures into a clear message and exit code 1.</summary>
public static class CliErrors
{
    /// <summary>Runs <paramref name="body"/>; returns 0 on success, 1 on a user-facing error.</summary>
    public static int Run(Action body)
    {
        try
        {
            body();
            return 0;
        }
        catch (Exception e) when (e is CliException or SafetensorsFormatException or IOException or ArgumentException
                                       or InvalidOperationException or UnauthorizedAccessException or FormatException
                                       or InvalidDataException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    /// <summary>
    /// Checks that <paramref name="dir"/>, given with <paramref name="flag"/>, is a model directory (it has a
    /// config.json), so a wrong path is reported as such rather than as a missing file inside it.
    /// </summary>
    public static void RequireModelDirectory(string flag, string dir)
    {
        if (!Directory.Exists(dir)) throw new CliException($"{flag} {dir}: no such model directory");
        if (!File.Exists(Path.Combine(dir, "config.json")))
            throw new CliException($"{flag} {dir}: not a model directory (no config.json; expected the output of puremoe train --out, or a step-NNNNNN checkpoint)");
    }
}
