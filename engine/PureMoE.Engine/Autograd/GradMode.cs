namespace PureMoE.Autograd;

/// <summary>
/// Whether operations record the graph for backward. Off inside <see cref="NoGrad"/> scopes (per thread), e.g.
/// for evaluation, optimizer updates and the backward pass itself.
/// </summary>
public static class GradMode
{
    [ThreadStatic] private static int _disabledDepth;

    /// <summary>True when new operations are recorded for backward.</summary>
    public static bool IsEnabled => _disabledDepth == 0;

    /// <summary>Disables recording until the returned scope is disposed: <c>using (GradMode.NoGrad()) { ... }</c>.</summary>
    public static IDisposable NoGrad()
    {
        _disabledDepth++;
        return new Scope();
    }

    private sealed class Scope : IDisposable
    {
        private bool _disposed;

        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            _disabledDepth--;
        }
    }
}
