using System.Diagnostics;
using PureMoE.Models;
using PureMoE.Optim;

namespace PureMoE.Engine.Tests.Nn;

public class TrainingTests
{
    private readonly ITestOutputHelper _output;

    public TrainingTests(ITestOutputHelper output) => _output = output;

    /// <summary>Four rows of a repeating 8-token pattern, each starting at a different phase.</summary>
    private static Tensor PatternBatch()
    {
        long[] pattern = [3, 17, 5, 9, 22, 1, 30, 12];
        const int batch = 4, seq = 24;
        var ids = new long[batch * seq];
        for (int b = 0; b < batch; b++)
            for (int s = 0; s < seq; s++) ids[b * seq + s] = pattern[(s + 2 * b) % pattern.Length];
        return Tensor.FromArray(ids, batch, seq);
    }

    private static (MixtralForCausalLM Model, AdamW Optimizer) Setup(ulong seed)
    {
        var model = new MixtralForCausalLM(TinyConfigs.Mixtral(), new Rng(seed));
        var opt = new AdamW(model.Parameters(), lr: 3e-3, beta1: 0.9, beta2: 0.95, weightDecay: 0.01);
        return (model, opt);
    }

    private static double TrainStep(MixtralForCausalLM model, AdamW opt, Tensor ids)
    {
        opt.ZeroGrad();
        var loss = model.Loss(ids);
        loss.Backward();
        GradClip.ClipGradNorm(model.Parameters(), 1.0);
        opt.Step();
        return loss.Item();
    }

    [Fact]
    public void TinyMixtralLearnsARepeatingPattern()
    {
        var (model, opt) = Setup(seed: 1);
        var schedule = new LrSchedule(peakLr: 1e-2, warmupSteps: 10, totalSteps: 100, minLr: 1e-3);
        var ids = PatternBatch();
        var watch = Stopwatch.StartNew();
        double first = 0, last = 0;
        for (int step = 0; step < 100; step++)
        {
            opt.LearningRate = schedule.LearningRate(step);
            last = TrainStep(model, opt, ids);
            if (step == 0) first = last;
        }
        _output.WriteLine($"loss {first:F4} -> {last:F4} in {watch.ElapsedMilliseconds} ms");
        Assert.InRange(first, Math.Log(32) - 0.5, Math.Log(32) + 0.5);   // starts near uniform
        Assert.True(last < first / 2, $"loss went from {first} to {last}");
    }

    [Fact]
    public void SameSeedGivesBitIdenticalLossAfterFiveSteps()
    {
        double Run()
        {
            var (model, opt) = Setup(seed: 7);
            var ids = PatternBatch();
            for (int step = 0; step < 5; step++) TrainStep(model, opt, ids);
            using (Tensor.NoGrad()) return model.Loss(ids).Item();
        }
        double a = Run(), b = Run();
        Assert.Equal(BitConverter.DoubleToInt64Bits(a), BitConverter.DoubleToInt64Bits(b));
    }

    [Fact]
    public void Float64ReferenceBackendAgreesWithFloat32Cpu()
    {
        var config = TinyConfigs.Mixtral();
        var fast = new MixtralForCausalLM(config, new Rng(3));
        var reference = new MixtralForCausalLM(config, new Rng(3));
        reference.To(DType.Float64).To(Device.CpuReference);
        var ids = PatternBatch();

        var lossFast = fast.Loss(ids);
        lossFast.Backward();
        var lossRef = reference.Loss(ids.To(Device.CpuReference));
        lossRef.Backward();
        Assert.Equal(lossRef.Item(), lossFast.Item(), 4);

        foreach (var ((name, pf), (_, pr)) in fast.NamedParameters().Zip(reference.NamedParameters()))
        {
            Assert.True(pf.Grad is not null == pr.Grad is not null, name);
            if (pf.Grad is null) continue;
            double diff = TinyConfigs.MaxAbsDiff(pr.Grad!.ToDoubleArray(), pf.Grad.ToDoubleArray());
            double scale = pr.Grad!.ToDoubleArray().Max(Math.Abs);
            Assert.True(diff <= 1e-3 * scale + 1e-6, $"{name}: grad differs by {diff} (max {scale})");
        }
    }
}
