namespace PureMoE.Engine.Tests;

public class RngTests
{
    // Lengths that end on a full pair, on half a pair (a spare left over), inside one chunk and across chunks
    // (65,536 pairs each, transformed in parallel blocks).
    [Theory]
    [InlineData(0, false)]
    [InlineData(1, false)]
    [InlineData(2, true)]
    [InlineData(7, true)]
    [InlineData(8, false)]
    [InlineData(300_001, false)]
    [InlineData(300_001, true)]
    public void FillGaussianGivesExactlyTheValuesOfNextGaussianInTurn(int length, bool spareFirst)
    {
        var bulk = new Rng(42);
        var single = new Rng(42);
        if (spareFirst) Assert.Equal(single.NextGaussian(), bulk.NextGaussian());   // leaves a spare pending

        var floats = new float[length];
        bulk.FillGaussian(floats, 0.02);
        var expected = new float[length];
        for (int i = 0; i < length; i++) expected[i] = (float)(single.NextGaussian() * 0.02);
        Assert.Equal(expected, floats);

        var doubles = new double[length];
        bulk.FillGaussian(doubles, 3.0);
        for (int i = 0; i < length; i++) Assert.Equal(single.NextGaussian() * 3.0, doubles[i]);

        // The stream goes on in step, a pending spare included.
        for (int i = 0; i < 3; i++) Assert.Equal(single.NextGaussian(), bulk.NextGaussian());
        Assert.Equal(single.NextUInt64(), bulk.NextUInt64());
    }
}
