using PureMoE.Cli;
using PureMoE.IO;
using PureMoE.Moe.Models;

namespace PureMoE.Engine.Tests.Cli;

public sealed class RouteCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("puremoe-route").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string WriteLogits(int tokens, int experts, ulong seed)
    {
        string path = Path.Combine(_dir, $"logits-{seed}.safetensors");
        TensorIO.Save(path, [new("logits", Tensor.Randn(new Shape(tokens, experts), new Rng(seed), 2.0))]);
        return path;
    }

    [Fact]
    public void TopKPlanIsWrittenWithShapesAndLosses()
    {
        string logits = WriteLogits(16, 8, 1), output = Path.Combine(_dir, "plan.safetensors");
        var spec = RouterSpec.Create("topk", new Dictionary<string, string> { ["k"] = "2", ["capacity_factor"] = "1.0", ["aux_loss"] = "0.01", ["z_loss"] = "0.001" });
        RouteCommand.Run(spec, logits, output, 1, null, TextWriter.Null);
        var plan = TensorIO.Load(output);
        Assert.Equal(new Shape(16, 2), plan["experts"].Shape);
        Assert.Equal(new Shape(16, 2), plan["weights"].Shape);
        Assert.Equal(DType.Int64, plan["dropped"].DType);
        Assert.True(plan["aux_loss"].Item() > 0);
        Assert.True(plan["z_loss"].Item() > 0);
        // Capacity ceil(16·2/8·1) = 4 per expert: no expert keeps more.
        long[] experts = plan["experts"].ToLongArray(), dropped = plan["dropped"].ToLongArray();
        for (int e = 0; e < 8; e++)
            Assert.True(experts.Where((x, i) => x == e && dropped[i] == 0).Count() <= 4);
    }

    [Fact]
    public void RectifyOnFourDevicesRectifiesOntoTheTokensOwnDevice()
    {
        // Skewed logits: expert 0 wins almost everywhere, so capacity drops tokens and IR catches them.
        var skew = Tensor.Randn(new Shape(32, 8), new Rng(2)).Add(Tensor.FromArray(new float[] { 4, 0, 0, 0, 0, 0, 0, 0 }, 8));
        string logits = Path.Combine(_dir, "skew.safetensors"), output = Path.Combine(_dir, "plan.safetensors");
        TensorIO.Save(logits, [new("logits", skew)]);
        var spec = RouterSpec.Create("rectify", new Dictionary<string, string> { ["k"] = "1", ["fill_in"] = "false" });
        var log = new StringWriter();
        var plans = RouteCommand.Run(spec, logits, output, 4, null, log);
        Assert.Equal(4, plans.Count);
        var written = TensorIO.Load(output);
        long[] experts = written["experts"].ToLongArray(), kind = written["kind"].ToLongArray();
        int m = written["experts"].Shape[1], rectified = 0;
        for (int i = 0; i < experts.Length; i++)
        {
            if (kind[i] != 3) continue;
            rectified++;
            int token = i / m, device = token / 8;
            Assert.Equal(device, (int)experts[i] / 2);     // 8 experts on 4 devices: device p holds 2p, 2p+1
        }
        Assert.True(rectified > 0);
        Assert.Contains("IR tokens", log.ToString());
    }

    [Fact]
    public void C2RNeedsListsAndUsesThem()
    {
        string logits = WriteLogits(10, 4, 3), output = Path.Combine(_dir, "plan.safetensors");
        var spec = RouterSpec.Create("c2r", new Dictionary<string, string> { ["k"] = "2", ["candidates"] = "1" });
        Assert.Throws<CliException>(() => RouteCommand.Run(spec, logits, output, 1, null, TextWriter.Null));
        // Lists pairing 0↔1 and 2↔3: with one candidate, a token's second expert is its first's partner.
        string lists = Path.Combine(_dir, "lists.safetensors");
        TensorIO.Save(lists, [new("candidates", Tensor.FromArray(new long[] { 1, 2, 3, 0, 2, 3, 3, 0, 1, 2, 0, 1 }, 4, 3))]);
        RouteCommand.Run(spec, logits, output, 1, lists, TextWriter.Null);
        long[] experts = TensorIO.Load(output)["experts"].ToLongArray();
        for (int t = 0; t < 10; t++) Assert.Equal(experts[2 * t] ^ 1, experts[2 * t + 1]);
    }

    [Fact]
    public void UnknownRouterAndMisplacedOptionsAreClearErrors()
    {
        var ex = Assert.Throws<ArgumentException>(() => RouterSpec.Create("softmoe"));
        Assert.Contains("unknown router 'softmoe'", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => RouterSpec.Create("relu", new Dictionary<string, string> { ["capacity_factor"] = "1" }));
        Assert.Contains("has no option 'capacity_factor'", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => RouterSpec.Create("topk", new Dictionary<string, string> { ["normalization"] = "sideways" }));
        Assert.Contains("normalization = 'sideways' is not one of", ex.Message);
    }

    [Fact]
    public void CommandLineRoutesThroughTheFlags()
    {
        string logits = WriteLogits(8, 4, 4), output = Path.Combine(_dir, "cli.safetensors");
        int code = PureMoE.Cli.Program.Main(["route", "--router", "relu", "--logits", logits, "--out", output]);
        Assert.Equal(0, code);
        var plan = TensorIO.Load(output);
        Assert.Equal(new Shape(8, 4), plan["experts"].Shape);      // ReLU routing: one slot per expert
        float[] logitValues = TensorIO.Load(logits)["logits"].ToArray<float>();
        long[] experts = plan["experts"].ToLongArray();
        for (int i = 0; i < experts.Length; i++) Assert.Equal(logitValues[i] > 0, experts[i] >= 0);
    }
}
