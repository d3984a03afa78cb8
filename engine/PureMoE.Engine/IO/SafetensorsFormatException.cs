namespace PureMoE.IO;

/// <summary>
/// Thrown when a file is not a valid safetensors file. The message always names the file and the
/// exact problem; <see cref="FilePath"/> and <see cref="Problem"/> expose them separately.
/// </summary>
public sealed class SafetensorsFormatException : IOException
{
    /// <summary>Creates the exception for <paramref name="filePath"/>.</summary>
    /// <param name="filePath">The file that failed validation.</param>
    /// <param name="problem">A description of the problem (without the file name).</param>
    /// <param name="innerException">The underlying error, if any.</param>
    public SafetensorsFormatException(string filePath, string problem, Exception? innerException = null)
        : base($"Invalid safetensors file '{filePath}': {problem}", innerException)
    {
        FilePath = filePath;
        Problem = problem;
    }

    /// <summary>The file that failed validation.</summary>
    public string FilePath { get; }

    /// <summary>The problem, without the file name.</summary>
    public string Problem { get; }
}
