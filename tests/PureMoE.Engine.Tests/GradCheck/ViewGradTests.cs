using FsCheck.Xunit;
using PureMoE.Testing;

namespace PureMoE.Engine.Tests.GradCheck;

public class ViewGradTests
{
    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void Concat(AxisCase c)
    {
        var rng = c.Rng();
        int parts = 1 + rng.NextInt(3);
        var inputs = new Tensor[parts];
        for (int i = 0; i < parts; i++)
        {
            var d = (int[])c.Dims.Clone();
            d[c.PositiveAxis] = 1 + rng.NextInt(3);
            inputs[i] = GradChecker.Randn(new Shape(d), rng, device: c.Device);
        }
        GradChecker.Check($"Concat {c} [{string.Join(" ", inputs.Select(t => t.Shape))}]", t => Tensor.Concat(t, c.Axis), c.Seed, inputs);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void Split(AxisCase c)
    {
        var rng = c.Rng();
        int n = c.Dims[c.PositiveAxis];
        var sizes = new List<int>();
        for (int left = n; left > 0;) { int s = 1 + rng.NextInt(left); sizes.Add(s); left -= s; }
        var x = GradChecker.Randn(c.Shape, rng, device: c.Device);
        // Weigh each part differently so a mix-up between parts shows.
        GradChecker.Check($"Split {c} [{string.Join(",", sizes)}]", t =>
        {
            var p = t[0].Split([.. sizes], c.Axis);
            return Tensor.Concat(p.Select((q, i) => q.MulScalar(i + 1)).ToArray(), c.Axis);
        }, c.Seed, x);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void Narrow(AxisCase c)
    {
        var rng = c.Rng();
        int n = c.Dims[c.PositiveAxis];
        int start = rng.NextInt(n), length = 1 + rng.NextInt(n - start);
        GradChecker.Check($"Narrow {c} [{start},{start + length})", t => t[0].Narrow(c.Axis, start, length).Exp(), c.Seed,
            GradChecker.Randn(c.Shape, rng, device: c.Device));
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void ReshapeOfContiguousAndPermuted(ShapeCase c)
    {
        var rng = c.Rng();
        var x = GradChecker.Randn(c.Shape, rng, device: c.Device);
        // A random factorisation of numel into up to 3 dims, one of them inferred (-1).
        int numel = c.Shape.Numel;
        var divisors = Enumerable.Range(1, numel).Where(d => numel % d == 0).ToArray();
        int d0 = divisors[rng.NextInt(divisors.Length)];
        int[] target = [d0, -1];
        var rev = Enumerable.Range(0, c.Dims.Length).Reverse().ToArray();
        GradChecker.Check($"Reshape {c} -> [{d0},-1]", t => t[0].Reshape(target).Mul(t[0].Reshape(target)), c.Seed, x);
        GradChecker.Check($"Reshape of permuted {c} -> [{d0},-1]", t => t[0].Permute(rev).Reshape(target).Exp(), c.Seed, x);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void PermuteAndTranspose(ShapeCase c)
    {
        var rng = c.Rng();
        var x = GradChecker.Randn(c.Shape, rng, device: c.Device);
        int r = c.Dims.Length;
        var perm = Enumerable.Range(0, r).ToArray();
        for (int i = r - 1; i > 0; i--) { int j = rng.NextInt(i + 1); (perm[i], perm[j]) = (perm[j], perm[i]); }
        var w = GradChecker.Randn(new Shape(perm.Select(p => c.Dims[p]).ToArray()), rng, device: c.Device);
        GradChecker.Check($"Permute {c} [{string.Join(",", perm)}]", t => t[0].Permute(perm).Mul(w), c.Seed, x);
        if (r >= 2)
        {
            int a = rng.NextInt(r), b = rng.NextInt(r);
            GradChecker.Check($"Transpose {c} ({a},{b})", t => t[0].Transpose(a, b).Exp(), c.Seed, x);
        }
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void Expand(BroadcastCase c)
    {
        // Expand A's shape to the broadcast result, then weigh by B so every copy is distinct.
        var rng = c.Rng();
        var x = GradChecker.Randn(c.ShapeA, rng, device: c.Device);
        GradChecker.Check($"Expand {c.ShapeA}->{c.Result}", t => t[0].Expand(c.Result).Exp(), c.Seed, x);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void UnsqueezeSqueeze(ShapeCase c)
    {
        var rng = c.Rng();
        var x = GradChecker.Randn(c.Shape, rng, device: c.Device);
        int r = c.Dims.Length, at = rng.NextInt(r + 1) - (rng.NextDouble() < 0.5 ? r + 1 : 0);
        GradChecker.Check($"Unsqueeze({at}) {c}", t => t[0].Unsqueeze(at).Exp(), c.Seed, x);
        GradChecker.Check($"Unsqueeze({at}).Squeeze({at}) {c}", t => t[0].Unsqueeze(at).Squeeze(at).Exp(), c.Seed, x);
        int one = Array.IndexOf(c.Dims, 1);
        if (one >= 0) GradChecker.Check($"Squeeze({one}) {c}", t => t[0].Squeeze(one).Exp(), c.Seed, x);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void WhereBothBranches(BroadcastCase c)
    {
        var rng = c.Rng();
        var a = GradChecker.Randn(c.ShapeA, rng, device: c.Device);
        var b = GradChecker.Randn(c.ShapeB, rng, device: c.Device);
        var m = new double[c.Result.Numel];
        for (int i = 0; i < m.Length; i++) m[i] = rng.NextDouble() < 0.5 ? 1 : 0;
        var cond = Tensor.FromHost(m, c.Result.ToArray(), c.Device);
        GradChecker.Check($"Where {c}", t => Tensor.Where(cond, t[0], t[1]), c.Seed, a, b);
        var condLong = cond.To(DType.Int64);
        GradChecker.Check($"Where int64 mask {c}", t => Tensor.Where(condLong, t[0], t[1]).Exp(), c.Seed, a, b);
    }
}
