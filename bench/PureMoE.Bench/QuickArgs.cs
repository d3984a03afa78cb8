using System.Globalization;

namespace PureMoE.Bench;

/// <summary>
/// Minimal `--name value` / `--flag` parser for the quick subcommands. Every option given must be consumed
/// by the command (checked by <see cref="ThrowIfUnused"/>), so typos fail loudly instead of being ignored.
/// </summary>
public sealed class QuickArgs
{
    private readonly Dictionary<string, string?> values = new(StringComparer.Ordinal);
    private readonly HashSet<string> used = new(StringComparer.Ordinal);

    private QuickArgs()
    {
    }

    /// <summary>Parses options; a token starting with `--` followed by a token not starting with `--` is a value.</summary>
    /// <param name="args">Tokens after the subcommand name.</param>
    public static QuickArgs Parse(ReadOnlySpan<string> args)
    {
        var result = new QuickArgs();
        for (int i = 0; i < args.Length; i++)
        {
            string token = args[i];
            if (!token.StartsWith("--", StringComparison.Ordinal) || token.Length == 2)
            {
                throw new ArgumentException($"unexpected argument '{token}'");
            }

            string name = token[2..];
            string? value = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : null;
            result.values[name] = value;
        }

        return result;
    }

    /// <summary>True when `--name` was given (as a flag or with a value).</summary>
    /// <param name="name">Option name without dashes.</param>
    public bool Flag(string name)
    {
        used.Add(name);
        return values.ContainsKey(name);
    }

    /// <summary>Integer option, or <paramref name="fallback"/> when absent.</summary>
    /// <param name="name">Option name without dashes.</param>
    /// <param name="fallback">Value when the option is absent; null makes it required.</param>
    public int Int(string name, int? fallback = null)
    {
        used.Add(name);
        if (values.TryGetValue(name, out string? text))
        {
            return text is not null && int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= 0
                ? v
                : throw new ArgumentException($"--{name} needs a non-negative integer value");
        }

        return fallback ?? throw new ArgumentException($"--{name} is required");
    }

    /// <summary>String option, or <paramref name="fallback"/> when absent.</summary>
    /// <param name="name">Option name without dashes.</param>
    /// <param name="fallback">Value when the option is absent.</param>
    public string Text(string name, string fallback)
    {
        used.Add(name);
        if (values.TryGetValue(name, out string? text))
        {
            return text ?? throw new ArgumentException($"--{name} needs a value");
        }

        return fallback;
    }

    /// <summary>Throws if an option was given that no accessor asked for.</summary>
    public void ThrowIfUnused()
    {
        foreach (string name in values.Keys)
        {
            if (!used.Contains(name))
            {
                throw new ArgumentException($"unknown option --{name}");
            }
        }
    }
}
