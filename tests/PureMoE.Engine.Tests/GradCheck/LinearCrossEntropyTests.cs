using PureMoE.Engine.Tests.Backends;
using PureMoE.Testing;

namespace PureMoE.Engine.Tests.GradCheck;

/// <summary>
/// Tensor.LinearCrossEntropy (the output layer and the mean cross-entropy as one op, in blocks of rows): gradients
/// against finite differences, and value and gradients equal to Linear(W).CrossEntropy(targets).
/// </summary>
public class LinearCrossEntropyTests
{
    private static Tensor Targets(int n, int v, ulong seed, long ignore = -100, int ignoredEvery = 4)
    {
        var rng = new Rng(seed);
        var t = new long[n];
        for (int i = 0; i < n; i++) t[i] = i % ignoredEvery == 1 ? ignore : rng.NextInt(v);
        return Tensor.FromArray(t, n);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(null)]
    public void GradientsMatchFiniteDifferences(int? blockRows)
    {
        // Hidden states without their last position (a view, as the model's loss takes them), 7 classes.
        var h = GradChecker.Randn(new Shape(2, 5, 4), new Rng(1));
        var w = GradChecker.Randn(new Shape(7, 4), new Rng(2));
        var t = Targets(8, 7, 3).Reshape(2, 4);
        foreach (var device in new[] { Device.Cpu, Device.CpuReference })
            GradChecker.Check($"LinearCrossEntropy block {blockRows} on {device}",
                x => x[0].Narrow(1, 0, 4).LinearCrossEntropy(x[1], t.To(device), blockRows: blockRows), [h, w], device: device);
    }

    [Fact]
    public void ValueAndGradientsAreThoseOfLinearThenCrossEntropy()
    {
        const int rows = 40, d = 16, v = 300;
        var h = Tensor.Randn(new Shape(rows, d), new Rng(4));
        var w = Tensor.Randn(new Shape(v, d), new Rng(5), std: 0.3);
        var t = Targets(rows, v, 6);
        var (fused, fh, fw) = LossAndGrads(h, w, x => x[0].LinearCrossEntropy(x[1], t, blockRows: 7));   // ragged last block
        var (plain, ph, pw) = LossAndGrads(h, w, x => x[0].Linear(x[1]).CrossEntropy(t));
        Assert.Equal(plain, fused, 1e-5);
        K.Close(ph, fh, 1e-5, 1e-6, "dhidden");
        K.Close(pw, fw, 1e-5, 1e-6, "dweight");
        using (Tensor.NoGrad()) Assert.Equal(fused, h.LinearCrossEntropy(w, t).Item(), 1e-5);
    }

    [Fact]
    public void AllIgnoredGivesZeroLossAndZeroGradients()
    {
        var h = Tensor.Randn(new Shape(3, 4), new Rng(7));
        var w = Tensor.Randn(new Shape(5, 4), new Rng(8));
        var (loss, dh, dw) = LossAndGrads(h, w, x => x[0].LinearCrossEntropy(x[1], Tensor.FromArray(new long[] { -100, -100, -100 }, 3)));
        Assert.Equal(0.0, loss);
        Assert.All(dh, g => Assert.Equal(0f, g));
        Assert.All(dw, g => Assert.Equal(0f, g));
        var (none, _, dwNone) = LossAndGrads(Tensor.Zeros(new Shape(0, 4)), w, x => x[0].LinearCrossEntropy(x[1], Tensor.Zeros(new Shape(0), DType.Int64)));
        Assert.Equal(0.0, none);
        Assert.All(dwNone, g => Assert.Equal(0f, g));
    }

    [Fact]
    public void BadInputsAreClearErrors()
    {
        var h = Tensor.Randn(new Shape(3, 4), new Rng(9));
        var w = Tensor.Randn(new Shape(5, 4), new Rng(10));
        Assert.Contains("target 5 at position 1 is outside [0, 5)",
            Assert.Throws<ArgumentException>(() => h.LinearCrossEntropy(w, Tensor.FromArray(new long[] { 0, 5, 1 }, 3))).Message);
        Assert.Contains("needs an input [..., d] and a weight [V, d]",
            Assert.Throws<ArgumentException>(() => h.LinearCrossEntropy(w.T, Tensor.FromArray(new long[] { 0, 1, 2 }, 3))).Message);
        Assert.Contains("int64 targets of shape [3]",
            Assert.Throws<ArgumentException>(() => h.LinearCrossEntropy(w, Tensor.FromArray(new long[] { 0, 1 }, 2))).Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheModelsLossTakesTheFusedPathForLargeLogitsWithTheSameValueAndGradients(bool tied)
    {
        // 2 × 129 positions predict 2 × 128 ids over 70,000 classes: 17.9 M logits, more than one block.
        var config = new PureMoE.Models.MixtralConfig
        {
            VocabSize = 70_000, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 1, NumAttentionHeads = 2,
            NumKeyValueHeads = 1, NumLocalExperts = 2, NumExpertsPerTok = 1, MaxPositionEmbeddings = 256, TieWordEmbeddings = tied,
        };
        Assert.True(2L * 128 * config.VocabSize > Tensor.LinearCrossEntropyBlockElements);
        var model = new PureMoE.Models.MixtralForCausalLM(config, new Rng(12));
        var rng = new Rng(13);
        var ids = Tensor.FromArray(Enumerable.Range(0, 2 * 129).Select(_ => (long)rng.NextInt(config.VocabSize)).ToArray(), 2, 129);
        var head = tied ? model.Model.EmbedTokens.Weight : model.LmHead!.Weight;

        var fused = model.Loss(ids);
        fused.Backward();
        var fusedGrad = head.Grad!.ToArray<float>();
        var fusedNorm = model.Model.Norm.Weight.Grad!.ToArray<float>();
        model.ZeroGrad();
        var plain = PureMoE.Models.MixtralForCausalLM.NextTokenLoss(model.Forward(ids), ids);
        plain.Backward();
        Assert.Equal(plain.Item(), fused.Item(), 1e-5);
        K.Close(head.Grad!.ToArray<float>(), fusedGrad, 1e-4, 1e-7, "head weight");
        K.Close(model.Model.Norm.Weight.Grad!.ToArray<float>(), fusedNorm, 1e-4, 1e-7, "final norm (through dhidden)");
    }

    private static (double Loss, float[] DHidden, float[] DWeight) LossAndGrads(Tensor h, Tensor w, Func<Tensor[], Tensor> loss)
    {
        var x = new[] { h.Detach(), w.Detach() };
        foreach (var leaf in x) leaf.RequiresGrad = true;
        var l = loss(x);
        l.Backward();
        return (l.Item(), x[0].Grad!.ToArray<float>(), x[1].Grad!.ToArray<float>());
    }
}
