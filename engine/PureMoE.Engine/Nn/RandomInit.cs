namespace PureMoE.Nn;

/// <summary>
/// Skips the random initialisation of parameters while a model whose every parameter will be loaded is built
/// (Hugging Face's <c>no_init_weights</c>). Drawing 100 million normal samples takes seconds and allocates a copy of
/// the model that the checkpoint then overwrites; <see cref="Models.MixtralCheckpoint.Load"/> builds its model
/// inside <see cref="Skip"/>.
/// </summary>
public static class RandomInit
{
    [ThreadStatic] private static int _skipDepth;

    /// <summary>
    /// Until the returned scope is disposed, <see cref="Tensor.Randn"/> and <see cref="Tensor.Uniform"/> on this
    /// thread return tensors with unspecified contents and draw nothing from their generator. Scopes nest.
    /// </summary>
    public static IDisposable Skip()
    {
        _skipDepth++;
        return new Scope();
    }

    /// <summary>Whether a <see cref="Skip"/> scope is open on this thread.</summary>
    public static bool IsSkipped => _skipDepth > 0;

    private sealed class Scope : IDisposable
    {
        private bool _disposed;

        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            _skipDepth--;
        }
    }
}
