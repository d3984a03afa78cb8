// EmbedMoe: PureMoE from its NuGet packages. Prints lines a test checks:
//   router <name>: output [2, 6, 16] finite=True tokens=12 pairs=<n> grad=True
//   train: loss <first> -> <last> decreased=True
//   generate: "<prompt>" -> "<text>" bytes=<n>
//   scope: owned=<n> freed=True
//   EmbedMoe OK
using System.Globalization;
using PureMoE;
using PureMoE.Models;
using PureMoE.Moe;
using PureMoE.Moe.Models;
using PureMoE.Moe.Routing;
using PureMoE.Optim;

CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

// 1. A MoE layer with each of the four routers: forward and backward.
foreach (var name in new[] { "topk", "rectify", "relu", "c2r" })
{
    IRouter router = name switch
    {
        "topk" => new TopKRouter(4, new TopKOptions { K = 2, CapacityFactor = 1.25 }),
        "rectify" => new RectifyRouter(4, new RectifyOptions { K = 1, CapacityFactor = 1.0 }),
        "relu" => new ReluRouter(4, new ReluRouterOptions { K = 2 }),
        _ => new C2RRouter(4, new C2ROptions { K = 2 }, [[1, 2, 3], [0, 2, 3], [3, 0, 1], [2, 0, 1]]),
    };
    var rng = new Rng(11);
    var moe = new MoeLayer(hiddenSize: 16, intermediateSize: 32, router, rng);
    var x = Tensor.Randn(new Shape(2, 6, 16), rng);
    var y = moe.Forward(x);
    y.Square().Mean().Backward();
    bool finite = y.ToFloatArray().All(float.IsFinite);
    bool grad = moe.Parameters().All(p => p.Grad is not null);
    Console.WriteLine($"router {name}: output {y.Shape} finite={finite} tokens={moe.LastStats!.Tokens} " +
                      $"pairs={moe.LastStats.PairsChosen} grad={grad}");
}

// 2. A tiny Mixtral-architecture MoE language model: train a few AdamW steps, then generate.
var config = new MixtralConfig
{
    VocabSize = 256, HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 1, NumAttentionHeads = 4,
    NumKeyValueHeads = 2, NumLocalExperts = 4, NumExpertsPerTok = 2, RouterJson = """{"name": "topk", "k": 2}""",
};
var model = MoeMixtral.Create(config, new Rng(1));
var optimizer = new AdamW(model.Parameters(), lr: 1e-2);
var batch = TextGeneration.Encode("the cat sat. the cat sat. the cat sat.");
double first = 0, last = 0;
for (int step = 0; step < 15; step++)
{
    optimizer.ZeroGrad();
    var loss = model.Loss(batch);
    var total = model.RegularizationLoss() is Tensor reg ? loss.Add(reg) : loss;
    total.Backward();
    optimizer.Step();
    MoeMixtral.AfterOptimizerStep(model);
    if (step == 0) first = loss.Item();
    last = loss.Item();
}
Console.WriteLine($"train: loss {first:F3} -> {last:F3} decreased={last < first}");

string dir = Path.Combine(Path.GetTempPath(), "embedmoe-" + Environment.ProcessId);
MoeMixtral.Save(model, dir);
var loaded = MoeMixtral.Load(dir);
loaded.Eval();
string text = TextGeneration.Generate(loaded, "the cat", maxNewTokens: 8);
Directory.Delete(dir, recursive: true);
Console.WriteLine($"generate: \"the cat\" -> \"{text.Replace("\n", "\\n")}\" bytes={System.Text.Encoding.UTF8.GetByteCount(text)}");

// 3. Device memory in a scope (the ILGPU CPU accelerator stands in for a GPU).
var device = Device.IlgpuCpu;
var w = Tensor.Randn(new Shape(16, 16), new Rng(2), device: device);
Tensor intermediate;
int owned;
using (var scope = DeviceScope.Begin())
{
    intermediate = Tensor.Randn(new Shape(4, 16), new Rng(3)).To(device).MatMul(w);
    scope.Keep(intermediate.Relu());
    owned = scope.OwnedCount;
}
bool freed;
try { intermediate.ToFloatArray(); freed = false; } catch (ObjectDisposedException) { freed = true; }
Console.WriteLine($"scope: owned={owned} freed={freed}");
Console.WriteLine("EmbedMoe OK");
