using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using PureMoE.Testing;

namespace PureMoE.Engine.Tests.GradCheck;

public class GroupedMatMulTests
{
    [Property(MaxTest = 40)]
    public Property GradientsMatchFiniteDifferences() => Prop.ForAll(
        Gen.Choose(0, 4).ArrayOf(3).ToArbitrary(),
        Gen.Choose(1, 4).ToArbitrary(),
        Gen.Choose(1, 4).ToArbitrary(),
        (sizes, k, outDim) =>
        {
            var rng = new Rng((ulong)(sizes.Sum() * 131 + k * 7 + outDim));
            int n = sizes.Sum();
            var x = GradChecker.Randn(new Shape(n, k), rng);
            var ws = sizes.Select(_ => GradChecker.Randn(new Shape(outDim, k), rng)).ToArray();
            GradChecker.Check("GroupedMatMul", t => Tensor.GroupedMatMul(t[0], t[1..], sizes), 3, [x, .. ws]);
        });

    [Fact]
    public void EqualsPerGroupMatMul()
    {
        var rng = new Rng(3);
        int[] sizes = [5, 0, 9, 2];
        var x = Tensor.Randn(new Shape(16, 7), rng);
        var ws = sizes.Select(_ => Tensor.Randn(new Shape(6, 7), rng)).ToArray();
        var y = Tensor.GroupedMatMul(x, ws, sizes).ToArray<float>();
        int row = 0;
        for (int g = 0; g < sizes.Length; row += sizes[g], g++)
        {
            if (sizes[g] == 0) continue;
            var expected = x.Narrow(0, row, sizes[g]).MatMul(ws[g].T).ToArray<float>();
            for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], y[row * 6 + i], 1e-5f);
        }
    }

    [Fact]
    public void SizeMismatchNamesTheShapes()
    {
        var ex = Assert.Throws<ArgumentException>(() =>
            Tensor.GroupedMatMul(Tensor.Zeros(new Shape(4, 3)), [Tensor.Zeros(new Shape(2, 3))], [5]));
        Assert.Contains("add up to 5, but x [4,3] has 4 rows", ex.Message);
    }
}
