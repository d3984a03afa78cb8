using PureMoE.Moe.Routing;
using PureMoE.Optim;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>
/// ReMoE's controller in a toy training run: an MoE layer (d 16, E 8, k 2) learns a fixed random teacher with AdamW
/// on mean-squared error plus the sparsity loss; λ starts at 1e-8 and adapts after every step.
/// </summary>
/// <remarks>
/// The inputs are LM-like: a token id from a small vocabulary picks an embedding, plus a little noise. (Zero-mean
/// symmetric inputs would not do: with no bias, P(x·w &gt; 0) = ½ for every w, so no router could be sparser than
/// 50% and λ would grow without bound.)
/// </remarks>
public class ReluTrainingTests(ITestOutputHelper output)
{
    public sealed record Trajectory(float[] Lambda, double[] Sparsity, double[] TaskLoss, double Target);

    public static Trajectory Train(int steps, ulong seed, double lr = 1e-2, double noise = 0.3, double initStd = 0.2, int vocabulary = 16)
    {
        const int d = 16, experts = 8, k = 2, tokens = 64;
        var rng = new Rng(seed);
        var embeddings = Tensor.Randn(new Shape(vocabulary, d), rng);
        var router = new ReluRouter(experts, new ReluRouterOptions { K = k });
        var layer = new MoeLayer(d, 32, router, rng, initStd: initStd);
        var teacher = Tensor.Randn(new Shape(d, d), rng, std: 0.5);                  // targets y* = tanh(x·A)
        var optimizer = new AdamW(layer.Parameters(), lr: lr, weightDecay: 0);

        var lambda = new float[steps];
        var sparsity = new double[steps];
        var taskLoss = new double[steps];
        for (int step = 0; step < steps; step++)
        {
            var ids = Tensor.FromArray(Enumerable.Range(0, tokens).Select(_ => (long)rng.NextInt(vocabulary)).ToArray(), tokens);
            var x = embeddings.Embedding(ids).Add(Tensor.Randn(new Shape(tokens, d), rng, std: noise));
            var target = x.MatMul(teacher).Tanh();
            var y = layer.Forward(x);
            var mse = y.Sub(target).Square().Mean();
            var loss = mse.Add(layer.LastRegularizationLoss!);
            optimizer.ZeroGrad();
            loss.Backward();
            optimizer.Step();

            var plan = layer.LastPlan!;
            lambda[step] = router.Lambda.Value;                                       // λ this step's loss used
            sparsity[step] = plan.Extras["sparsity"];
            taskLoss[step] = mse.Item();
            router.AfterOptimizerStep([plan]);
        }
        return new Trajectory(lambda, sparsity, taskLoss, router.TargetSparsity);
    }

    [Theory]
    [InlineData(11UL)]
    [InlineData(12UL)]
    public void LambdaRisesAndSparsitySettlesAtTheTarget(ulong seed)
    {
        const int steps = 300;
        var run = Train(steps, seed);
        for (int s = 0; s < steps; s += 25)
            output.WriteLine($"step {s,3}: λ = {run.Lambda[s]:E2}  S = {run.Sparsity[s]:F3}  mse = {run.TaskLoss[s]:F4}");

        Assert.Equal(1e-8f, run.Lambda[0]);
        Assert.True(run.Lambda.Max() > 1e-5f, $"λ never rose: max {run.Lambda.Max():E2}");
        // Stage 1: λ too small to matter, the layer is denser than the target, so λ climbs every step.
        Assert.True(run.Sparsity[0] < run.Target);
        for (int s = 1; s <= 50; s++) Assert.Equal(run.Lambda[s - 1] * 1.2f, run.Lambda[s]);
        // Stage 3: sparsity oscillates around τ = 0.75, and λ hovers where the penalty balances the task.
        double lateSparsity = run.Sparsity.Skip(steps - 50).Average();
        output.WriteLine($"last 50 steps: mean S = {lateSparsity:F3}, λ in [{run.Lambda.Skip(steps - 50).Min():E2}, {run.Lambda.Skip(steps - 50).Max():E2}]");
        Assert.InRange(lateSparsity, run.Target - 0.08, run.Target + 0.08);
        Assert.All(run.Sparsity.Skip(steps - 50), s => Assert.InRange(s, run.Target - 0.15, run.Target + 0.15));
        Assert.InRange(run.Lambda.Skip(steps - 50).Max(), 1e-6f, 1e3f);
        Assert.True(run.TaskLoss.Skip(steps - 50).Average() < run.TaskLoss.Take(10).Average(), "the task did not learn");
    }
}
