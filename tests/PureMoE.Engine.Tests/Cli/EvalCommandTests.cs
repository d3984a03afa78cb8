using PureMoE.Cli;
using PureMoE.IO;
using PureMoE.Models;

namespace PureMoE.Engine.Tests.Cli;

/// <summary>
/// `puremoe eval` on a random Mixtral-format model against an independent float64 computation: the same model
/// loaded in float64 on the reference backend (plain loops, no SIMD, no blocked GEMM).
/// </summary>
public sealed class EvalCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("puremoe-eval").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    internal static MixtralConfig SmallConfig() => new()
    {
        VocabSize = 50,
        HiddenSize = 32,
        IntermediateSize = 48,
        NumHiddenLayers = 2,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        NumLocalExperts = 4,
        NumExpertsPerTok = 2,
        RmsNormEps = 1e-5,
        RopeTheta = 10000,
        MaxPositionEmbeddings = 64,
    };

    private (string Model, string Tokens) WriteModelAndTokens()
    {
        string modelDir = Path.Combine(_dir, "model");
        var model = new MixtralForCausalLM(SmallConfig(), new Rng(11));
        MixtralCheckpoint.Save(model, modelDir);
        var rng = new Rng(5);
        var ids = new long[2 * 9];
        for (int i = 0; i < ids.Length; i++) ids[i] = rng.NextInt(50);
        string tokens = Path.Combine(_dir, "tokens.safetensors");
        TensorIO.Save(tokens, [new("input_ids", Tensor.FromArray(ids, 2, 9))]);
        return (modelDir, tokens);
    }

    private static double MaxRelativeError(Tensor actual, Tensor expected)
    {
        double[] a = actual.ToDoubleArray(), e = expected.ToDoubleArray();
        Assert.Equal(e.Length, a.Length);
        double scale = e.Select(Math.Abs).DefaultIfEmpty(0).Max(), err = 0;
        for (int i = 0; i < a.Length; i++) err = Math.Max(err, Math.Abs(a[i] - e[i]));
        return err / Math.Max(scale, 1e-30);
    }

    [Fact]
    public void LogitsLossAndEveryGradientMatchFloat64Reference()
    {
        var (modelDir, tokens) = WriteModelAndTokens();
        string output = Path.Combine(_dir, "out.safetensors");
        EvalCommand.Run(modelDir, tokens, output, grads: true, TextWriter.Null);
        var got = TensorIO.Load(output);

        var reference = MixtralCheckpoint.Load(modelDir, DType.Float64, Device.CpuReference);
        var ids = TensorIO.Load(tokens, Device.CpuReference)["input_ids"];
        var logits = reference.Forward(ids);
        var loss = MixtralForCausalLM.NextTokenLoss(logits, ids);
        loss.Backward();

        Assert.True(MaxRelativeError(got["logits"], logits) <= 1e-4, $"logits rel err {MaxRelativeError(got["logits"], logits)}");
        Assert.Equal(loss.Item(), got["loss"].Item(), 1e-4 * Math.Abs(loss.Item()));
        int checkedGrads = 0;
        foreach (var (name, p) in reference.NamedParameters())
        {
            Assert.True(got.ContainsKey("grad." + name), $"missing grad.{name}");
            double err = MaxRelativeError(got["grad." + name], p.Grad!);
            Assert.True(err <= 1e-4, $"grad.{name}: relative error {err:E2}");
            checkedGrads++;
        }
        Assert.Equal(reference.Parameters().Count(), checkedGrads);
        Assert.Equal(3 + 2 * (4 + 1 + 4 * 3 + 2), checkedGrads);
    }

    [Fact]
    public void Float64EvalMatchesTheFloat64ReferenceToRounding()
    {
        var (modelDir, tokens) = WriteModelAndTokens();
        string output = Path.Combine(_dir, "out64.safetensors");
        EvalCommand.Run(modelDir, tokens, output, grads: true, TextWriter.Null, dtype: DType.Float64);
        var got = TensorIO.Load(output);
        Assert.Equal(DType.Float64, got["logits"].DType);

        var reference = MixtralCheckpoint.Load(modelDir, DType.Float64, Device.CpuReference);
        var ids = TensorIO.Load(tokens, Device.CpuReference)["input_ids"];
        var logits = reference.Forward(ids);
        var loss = MixtralForCausalLM.NextTokenLoss(logits, ids);
        loss.Backward();

        // The command line reaches the same path: --dtype float64 writes float64 logits.
        string viaCli = Path.Combine(_dir, "cli64.safetensors");
        var saved = Console.Out;
        Console.SetOut(TextWriter.Null);
        try { Assert.Equal(0, PureMoE.Cli.Program.Main(["eval", "--model", modelDir, "--tokens", tokens, "--out", viaCli, "--dtype", "float64"])); }
        finally { Console.SetOut(saved); }
        Assert.Equal(got["logits"].ToDoubleArray(), TensorIO.Load(viaCli)["logits"].ToDoubleArray());

        // Both run in float64; only the order of sums differs (blocked loops against plain ones).
        Assert.True(MaxRelativeError(got["logits"], logits) <= 1e-12, $"logits rel err {MaxRelativeError(got["logits"], logits)}");
        Assert.Equal(loss.Item(), got["loss"].Item(), 1e-12 * Math.Abs(loss.Item()));
        foreach (var (name, p) in reference.NamedParameters())
        {
            double err = MaxRelativeError(got["grad." + name], p.Grad!);
            Assert.True(err <= 1e-11, $"grad.{name}: relative error {err:E2}");
        }
    }

    [Fact]
    public void MissingInputIdsIsAClearError()
    {
        var (modelDir, _) = WriteModelAndTokens();
        string bad = Path.Combine(_dir, "bad.safetensors");
        TensorIO.Save(bad, [new("ids", Tensor.FromArray(new long[] { 1, 2 }, 1, 2))]);
        var ex = Assert.Throws<CliException>(() => EvalCommand.Run(modelDir, bad, Path.Combine(_dir, "o.safetensors"), false, TextWriter.Null));
        Assert.Contains("no tensor named input_ids", ex.Message);
        Assert.Contains("bad.safetensors", ex.Message);
    }

    [Fact]
    public void OutOfVocabularyTokenIsAClearError()
    {
        var (modelDir, _) = WriteModelAndTokens();
        string bad = Path.Combine(_dir, "oov.safetensors");
        TensorIO.Save(bad, [new("input_ids", Tensor.FromArray(new long[] { 1, 50 }, 1, 2))]);
        var ex = Assert.Throws<CliException>(() => EvalCommand.Run(modelDir, bad, Path.Combine(_dir, "o.safetensors"), false, TextWriter.Null));
        Assert.Contains("token id 50 is outside the vocabulary [0, 50)", ex.Message);
    }

    [Fact]
    public void CliReturnsOneAndNamesTheMissingModel()
    {
        var (_, tokens) = WriteModelAndTokens();
        var err = new StringWriter();
        var saved = Console.Error;
        Console.SetError(err);
        try
        {
            int code = PureMoE.Cli.Program.Main(["eval", "--model", Path.Combine(_dir, "nope"), "--tokens", tokens, "--out", Path.Combine(_dir, "o.safetensors")]);
            Assert.Equal(1, code);
        }
        finally { Console.SetError(saved); }
        Assert.Contains("nope", err.ToString());
    }
}
