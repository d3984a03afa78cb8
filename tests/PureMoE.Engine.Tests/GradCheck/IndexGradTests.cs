using FsCheck.Xunit;
using PureMoE.Testing;

namespace PureMoE.Engine.Tests.GradCheck;

public class IndexGradTests
{
    private static Tensor RandomIndices(Rng rng, int count, int bound, int[] shape, Device device)
    {
        var d = new long[count];
        for (int i = 0; i < count; i++) d[i] = rng.NextInt(bound);
        return Tensor.FromHost(d, shape, device);
    }

    private static string Show(Tensor idx) => $"[{string.Join(",", idx.ToLongArray())}]";

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void IndexSelectWithRepeats(AxisCase c)
    {
        var rng = c.Rng();
        var x = GradChecker.Randn(c.Shape, rng, device: c.Device);
        int count = 1 + rng.NextInt(5);
        var idx = RandomIndices(rng, count, c.Dims[c.PositiveAxis], [count], c.Device);
        GradChecker.Check($"IndexSelect {c} idx {Show(idx)}", t => t[0].IndexSelect(c.Axis, idx), c.Seed, x);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Some)]
    public void Embedding(ShapeCase c)
    {
        // c gives the ids' shape (rank ≤ 2 used); a [vocab, dim] table.
        var rng = c.Rng();
        int[] idsShape = c.Dims.Take(2).ToArray();
        int vocab = 1 + rng.NextInt(5), dim = 1 + rng.NextInt(4);
        var table = GradChecker.Randn(new Shape(vocab, dim), rng, device: c.Device);
        var ids = RandomIndices(rng, new Shape(idsShape).Numel, vocab, idsShape, c.Device);
        GradChecker.Check($"Embedding {c} ids {Show(ids)}", t =>
        {
            var y = t[0].Embedding(ids);
            Assert.Equal(new Shape([.. idsShape, dim]), y.Shape);
            return y;
        }, c.Seed, table);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void Gather(AxisCase c)
    {
        var rng = c.Rng();
        var x = GradChecker.Randn(c.Shape, rng, device: c.Device);
        var idxShape = (int[])c.Dims.Clone();
        idxShape[c.PositiveAxis] = 1 + rng.NextInt(4);
        var idx = RandomIndices(rng, new Shape(idxShape).Numel, c.Dims[c.PositiveAxis], idxShape, c.Device);
        GradChecker.Check($"Gather {c} idx {Show(idx)}", t => t[0].Gather(c.Axis, idx), c.Seed, x);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void ScatterAddBothInputs(AxisCase c)
    {
        var rng = c.Rng();
        var x = GradChecker.Randn(c.Shape, rng, device: c.Device);
        var idxShape = (int[])c.Dims.Clone();
        idxShape[c.PositiveAxis] = 1 + rng.NextInt(4);
        var idx = RandomIndices(rng, new Shape(idxShape).Numel, c.Dims[c.PositiveAxis], idxShape, c.Device);
        var src = GradChecker.Randn(new Shape(idxShape), rng, device: c.Device);
        GradChecker.Check($"ScatterAdd {c} idx {Show(idx)}", t => t[0].ScatterAdd(c.Axis, idx, t[1]), c.Seed, x, src);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void IndexAddBothInputsWithRepeatedIndices(AxisCase c)
    {
        var rng = c.Rng();
        var x = GradChecker.Randn(c.Shape, rng, device: c.Device);
        int count = 2 + rng.NextInt(4);
        // At most 2 distinct positions, so indices repeat.
        int n = c.Dims[c.PositiveAxis];
        var idx = RandomIndices(rng, count, Math.Min(n, 2), [count], c.Device);
        var srcShape = (int[])c.Dims.Clone();
        srcShape[c.PositiveAxis] = count;
        var src = GradChecker.Randn(new Shape(srcShape), rng, device: c.Device);
        GradChecker.Check($"IndexAdd {c} idx {Show(idx)}", t => t[0].IndexAdd(c.Axis, idx, t[1]), c.Seed, x, src);
    }

    [Property(Arbitrary = [typeof(ShapeArbitraries)], MaxTest = Runs.Many)]
    public void TopKValuesWithoutTies(ShapeCase c)
    {
        if (c.Dims.Length == 0) return;
        var rng = c.Rng();
        var x = GradChecker.Distinct(c.Shape, rng, device: c.Device);
        int k = 1 + rng.NextInt(c.Dims[^1]);
        GradChecker.Check($"TopK k={k} {c}", t => t[0].TopK(k).Values, c.Seed, x);
    }

    [Fact]
    public void TopKOfATransposedView()
    {
        var x = GradChecker.Distinct(new Shape(4, 3), new Rng(1));
        GradChecker.Check("TopK of x.T", t => t[0].T.TopK(2).Values, 1, x);
    }
}
