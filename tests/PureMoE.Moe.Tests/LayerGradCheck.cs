using PureMoE.Nn;

namespace PureMoE.Moe.Tests;

/// <summary>
/// Finite-difference check of a module's parameter gradients (float64): L = Σ f() · R for a fixed random R;
/// the analytic gradient comes from Backward, the numeric one from central differences on each parameter element
/// perturbed in place. Used for whole MoE layers, whose parameters live inside the module.
/// </summary>
public static class LayerGradCheck
{
    /// <summary>Checks every element of every parameter of <paramref name="module"/> (and of the extra inputs).</summary>
    public static void Check(string what, Module module, Func<Tensor> forward, ulong seed, double eps = 1e-6, double tolerance = 1e-6,
        params Tensor[] extraInputs)
    {
        var leaves = module.NamedParameters().Select(p => (p.Name, Tensor: p.Parameter))
            .Concat(extraInputs.Select((t, i) => (Name: $"input{i}", Tensor: t))).ToArray();
        foreach (var (_, t) in leaves) { t.RequiresGrad = true; t.ZeroGrad(); }
        var y0 = forward();
        var r = Tensor.Randn(y0.Shape, new Rng(seed), dtype: DType.Float64);
        y0.Mul(r).Sum().Backward();
        var analytic = leaves.Select(l => l.Tensor.Grad?.ToDoubleArray() ?? new double[l.Tensor.Numel]).ToArray();

        double Loss()
        {
            using var _ = Tensor.NoGrad();
            return forward().Mul(r).Sum().Item();
        }

        for (int p = 0; p < leaves.Length; p++)
        {
            var (name, t) = leaves[p];
            double[] values = t.ToDoubleArray();
            for (int i = 0; i < values.Length; i++)
            {
                double v = values[i], h = eps * Math.Max(1, Math.Abs(v));
                values[i] = v + h; t.CopyFrom(Tensor.FromArray(values, t.Shape.ToArray()));
                double up = Loss();
                values[i] = v - h; t.CopyFrom(Tensor.FromArray(values, t.Shape.ToArray()));
                double down = Loss();
                values[i] = v; t.CopyFrom(Tensor.FromArray(values, t.Shape.ToArray()));
                double numeric = (up - down) / (2 * h), err = Math.Abs(analytic[p][i] - numeric) / Math.Max(1, Math.Abs(numeric));
                if (err > tolerance)
                    throw new Xunit.Sdk.XunitException(
                        $"{what}: {name}{t.Shape} element {i}: analytic {analytic[p][i]:G10}, numeric {numeric:G10}, error {err:E2} (seed {seed})");
            }
        }
    }
}
