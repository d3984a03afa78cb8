using PureMoE;
using PureMoE.Models;
using PureMoE.Moe.Models;
using PureMoE.Optim;

public static class TrainWithAdamW
{
    // Trains a tiny Mixtral-architecture MoE on one byte string; returns the loss before and after.
    public static (double First, double Last) Run(string text, int steps, string routerJson = """{"name": "topk", "k": 2}""")
    {
        var config = new MixtralConfig
        {
            VocabSize = 256, HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 1, NumAttentionHeads = 4,
            NumKeyValueHeads = 2, NumLocalExperts = 4, NumExpertsPerTok = 2, RouterJson = routerJson,
        };
        var model = MoeMixtral.Create(config, new Rng(1));
        var optimizer = new AdamW(model.Parameters(), lr: 1e-2);
        var batch = TextGeneration.Encode(text);               // int64 [1, bytes]
        double first = 0, last = 0;
        for (int step = 0; step < steps; step++)
        {
            // The step's activations and gradients go back to a pool at its end, and the next step reuses them.
            using var scope = DeviceScope.Begin(reuseHostMemory: true);
            optimizer.ZeroGrad();
            var loss = model.Loss(batch);
            var total = model.RegularizationLoss() is Tensor reg ? loss.Add(reg) : loss;  // aux / z / L1 terms
            total.Backward();
            optimizer.Step();
            MoeMixtral.AfterOptimizerStep(model);                // ReMoE's adaptive λ
            (first, last) = (step == 0 ? loss.Item() : first, loss.Item());
            optimizer.ZeroGrad();                                // the gradients belong to this step's scope
        }
        return (first, last);
    }
}
