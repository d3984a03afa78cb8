using System.Globalization;
using System.Text;

namespace PureMoE.Testing;

/// <summary>A gradient check found an analytic gradient that disagrees with finite differences.</summary>
public sealed class GradCheckException(string message) : Exception(message);

/// <summary>
/// Float64 finite-difference gradient checks for anything built from PureMoE tensors (single ops, layers, whole
/// models). Self-contained (PureMoE public API only, no test-framework dependency) so other test projects can
/// link this file, e.g. in another test project:
/// <c>&lt;Compile Include="..\PureMoE.Engine.Tests\GradCheck\GradChecker.cs" Link="GradCheck\GradChecker.cs" /&gt;</c>
/// (and ShapeGen.cs too for the FsCheck shape generators; that one needs the FsCheck package).
/// <para>
/// The checked scalar is L(x) = Σ f(x)·R with R a fixed random normal tensor of f's output shape (seeded), so
/// every output element contributes with a different weight. The analytic gradient of L comes from
/// <see cref="Tensor.Backward()"/>; the numeric one from central differences
/// (L(x + h·e) − L(x − h·e)) / 2h with h = <see cref="Options.Eps"/>·max(1, |x|) for every element of every
/// checked input. An element fails when |analytic − numeric| / max(1, |numeric|) exceeds
/// <see cref="Options.Tolerance"/>.
/// </para>
/// <para>
/// Tolerances: with h = 1e-6 in float64 the truncation error of central differences is O(h²·f''') ≈ 1e-12 and
/// the rounding error ≈ 1e-16·|L|/h ≈ 1e-10·|L|, so the default 1e-6 leaves several orders of margin for
/// smooth functions of O(1) values while catching any real gradient bug (which is O(1) off). Inputs must keep
/// away from kinks (relu/abs at 0, ties in max/top-k) by more than h, or the check is meaningless there.
/// </para>
/// </summary>
public static class GradChecker
{
    /// <summary>Settings of one check.</summary>
    /// <param name="Eps">Relative finite-difference step (default 1e-6).</param>
    /// <param name="Tolerance">Largest allowed |analytic − numeric| / max(1, |numeric|) (default 1e-6).</param>
    /// <param name="Seed">Seed of the random output weights R.</param>
    public sealed record Options(double Eps = 1e-6, double Tolerance = 1e-6, ulong Seed = 0);

    /// <summary>
    /// Checks the gradient of <paramref name="f"/> with respect to every element of every input.
    /// <paramref name="inputs"/> are float64 tensors whose values are used (copied: they are not modified and
    /// need not require gradients); f is called with fresh leaf tensors holding those values, on
    /// <paramref name="device"/> (default: each input's own device). Non-differentiable arguments (indices,
    /// masks, tables) should be captured by f. Throws <see cref="GradCheckException"/> naming
    /// <paramref name="op"/>, the input, the element and both values on a mismatch.
    /// </summary>
    public static void Check(string op, Func<Tensor[], Tensor> f, Tensor[] inputs, Options? options = null,
        Device? device = null, bool[]? checkInput = null)
    {
        var o = options ?? new Options();
        var data = new double[inputs.Length][];
        var shapes = new Shape[inputs.Length];
        var devices = new Device[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
        {
            if (inputs[i].DType != DType.Float64)
                throw new ArgumentException($"GradCheck {op}: input {i} is {inputs[i].DType.Name()} {inputs[i].Shape}; checks need float64 inputs");
            data[i] = inputs[i].ToDoubleArray();
            shapes[i] = inputs[i].Shape;
            devices[i] = device ?? inputs[i].Device;
        }

        // Analytic: backward of L = Σ f(x)·R.
        var leaves = new Tensor[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
        {
            leaves[i] = Tensor.FromHost(data[i], shapes[i].ToArray(), devices[i]);
            leaves[i].RequiresGrad = checkInput is null || checkInput[i];
        }
        Tensor y = f(leaves);
        if (!y.DType.IsFloatingPoint())
            throw new ArgumentException($"GradCheck {op}: output is {y.DType.Name()} {y.Shape}, not floating point");
        var weights = RandomWeights(y.Numel, o.Seed);
        var r = Tensor.FromHost(weights, y.Shape.ToArray(), y.Device);
        if (y.DType != DType.Float64) r = r.To(y.DType);
        if (!y.RequiresGrad)
            throw new GradCheckException($"GradCheck {op}: the output {y.Shape} does not require a gradient (nothing was recorded)");
        y.Mul(r).Sum().Backward();

        for (int i = 0; i < inputs.Length; i++)
        {
            if (checkInput is not null && !checkInput[i]) continue;
            Tensor? grad = leaves[i].Grad;
            if (grad is not null && grad.Shape != shapes[i])
                throw new GradCheckException($"GradCheck {op}: gradient of input {i} has shape {grad.Shape}, input has {shapes[i]}");
            if (grad is not null && grad.DType != DType.Float64)
                throw new GradCheckException($"GradCheck {op}: gradient of input {i} {shapes[i]} is {grad.DType.Name()}, not float64");
            double[] analytic = grad?.ToDoubleArray() ?? new double[data[i].Length];

            for (int e = 0; e < data[i].Length; e++)
            {
                double x0 = data[i][e];
                double h = o.Eps * Math.Max(1, Math.Abs(x0));
                data[i][e] = x0 + h;
                double lp = Loss(f, data, shapes, devices, weights);
                data[i][e] = x0 - h;
                double lm = Loss(f, data, shapes, devices, weights);
                data[i][e] = x0;
                double numeric = (lp - lm) / (2 * h);
                double err = Math.Abs(analytic[e] - numeric) / Math.Max(1, Math.Abs(numeric));
                if (!(err <= o.Tolerance))
                    throw new GradCheckException(string.Create(CultureInfo.InvariantCulture,
                        $"GradCheck {op}: input {i} {shapes[i]} element {e} {MultiIndex(shapes[i], e)} (value {x0:R}): " +
                        $"analytic {analytic[e]:R}, numeric {numeric:R}, error {err:E3} > tolerance {o.Tolerance:E1} " +
                        $"(eps {o.Eps:E1}, seed {o.Seed}; inputs {Describe(shapes)})"));
            }
        }
    }

    /// <summary>Shorthand for <see cref="Check"/> with a default-built <see cref="Options"/> of the given seed.</summary>
    public static void Check(string op, Func<Tensor[], Tensor> f, ulong seed, params Tensor[] inputs) =>
        Check(op, f, inputs, new Options(Seed: seed));

    private static double Loss(Func<Tensor[], Tensor> f, double[][] data, Shape[] shapes, Device[] devices, double[] weights)
    {
        using var _ = Tensor.NoGrad();
        var xs = new Tensor[data.Length];
        for (int i = 0; i < data.Length; i++) xs[i] = Tensor.FromHost(data[i], shapes[i].ToArray(), devices[i]);
        double[] y = f(xs).ToDoubleArray();
        // Pairwise-free but compensated sum (Neumaier), so rounding does not swamp the difference.
        double sum = 0, c = 0;
        for (int j = 0; j < y.Length; j++)
        {
            double v = y[j] * weights[j], t = sum + v;
            c += Math.Abs(sum) >= Math.Abs(v) ? (sum - t) + v : (v - t) + sum;
            sum = t;
        }
        return sum + c;
    }

    private static double[] RandomWeights(int n, ulong seed)
    {
        var rng = new Rng(seed ^ 0x5EED_0F_0A7E_1A55UL);
        var w = new double[n];
        for (int i = 0; i < n; i++) w[i] = rng.NextGaussian();
        return w;
    }

    private static string MultiIndex(Shape s, int flat)
    {
        var idx = new int[s.Rank];
        for (int d = s.Rank - 1; d >= 0; d--) { idx[d] = flat % s[d]; flat /= s[d]; }
        return "[" + string.Join(",", idx) + "]";
    }

    private static string Describe(Shape[] shapes)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < shapes.Length; i++) sb.Append(i == 0 ? "" : ", ").Append(shapes[i]);
        return sb.ToString();
    }

    // ---------------------------------------------------------------- input makers (float64, deterministic)

    /// <summary>Normal(0, std²) values.</summary>
    public static Tensor Randn(Shape shape, Rng rng, double std = 1, Device? device = null) =>
        Tensor.Randn(shape, rng, std, DType.Float64, device);

    /// <summary>Uniform values in [low, high).</summary>
    public static Tensor Uniform(Shape shape, Rng rng, double low, double high, Device? device = null) =>
        Tensor.Uniform(shape, rng, low, high, DType.Float64, device);

    /// <summary>Values with |x| ≥ <paramref name="margin"/> and random sign (for kinks at 0: relu, abs, division).</summary>
    public static Tensor AwayFromZero(Shape shape, Rng rng, double margin = 0.1, Device? device = null)
    {
        var d = new double[shape.Numel];
        for (int i = 0; i < d.Length; i++)
            d[i] = (rng.NextDouble() < 0.5 ? -1 : 1) * (margin + Math.Abs(rng.NextGaussian()));
        return Tensor.FromHost(d, shape.ToArray(), device);
    }

    /// <summary>
    /// Pairwise distinct values (a shuffled grid with spacing <paramref name="spacing"/> plus small jitter), so max,
    /// top-k and sorting have no ties even after a finite-difference step. <paramref name="offset"/> shifts the grid
    /// (two tensors on grids offset by half the spacing never tie with each other either).
    /// </summary>
    public static Tensor Distinct(Shape shape, Rng rng, double spacing = 0.2, double offset = 0, Device? device = null)
    {
        int n = shape.Numel;
        var perm = new int[n];
        for (int i = 0; i < n; i++) perm[i] = i;
        for (int i = n - 1; i > 0; i--) { int j = rng.NextInt(i + 1); (perm[i], perm[j]) = (perm[j], perm[i]); }
        var d = new double[n];
        for (int i = 0; i < n; i++) d[i] = (perm[i] - n / 2) * spacing + offset + (rng.NextDouble() - 0.5) * spacing * 0.1;
        return Tensor.FromHost(d, shape.ToArray(), device);
    }
}
