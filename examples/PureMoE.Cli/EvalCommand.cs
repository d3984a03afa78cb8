using System.CommandLine;
using PureMoE.IO;
using PureMoE.Models;
using PureMoE.Moe.Models;

namespace PureMoE.Cli;

/// <summary>
/// `puremoe eval --model DIR --tokens FILE --out FILE [--grads]`: runs a Mixtral-format model on int64
/// `input_ids` [batch, seq] and writes `logits` [batch, seq, vocab], `loss` [1] (mean next-token cross-entropy)
/// and, with --grads, one `grad.NAME` per parameter. `--dtype float64` loads and runs the model in float64 (the
/// outputs are float64 too): the precision to compare against another implementation without float32 rounding.
/// </summary>
public static class EvalCommand
{
    /// <summary>The command with its options.</summary>
    public static Command Build()
    {
        var model = new Option<string>("--model") { Description = "Mixtral-format model directory (config.json + model.safetensors)", Required = true };
        var tokens = new Option<string>("--tokens") { Description = "safetensors file with input_ids (int64 [batch, seq])", Required = true };
        var output = new Option<string>("--out") { Description = "safetensors file to write", Required = true };
        var grads = new Option<bool>("--grads") { Description = "also write grad.<parameter name> for every parameter" };
        var dtype = new Option<string>("--dtype") { Description = "precision to load and run the model in", DefaultValueFactory = _ => "float32" };
        dtype.AcceptOnlyFromAmong("float32", "float64");
        var device = CliDevice.Create();
        var cmd = new Command("eval", "Evaluate a Mixtral-format model: logits, loss and optionally gradients") { model, tokens, output, grads, dtype, device };
        cmd.SetAction(r => CliErrors.Run(() => Run(r.GetValue(model)!, r.GetValue(tokens)!, r.GetValue(output)!, r.GetValue(grads), Console.Out,
            r.GetValue(device)!, r.GetValue(dtype) == "float64" ? DType.Float64 : DType.Float32)));
        return cmd;
    }

    /// <summary>Runs the evaluation (the command's body; tests call it directly).</summary>
    public static void Run(string modelDir, string tokensPath, string outPath, bool grads, TextWriter log, string device = "cpu",
        DType dtype = DType.Float32)
    {
        var on = CliDevice.Resolve(device);
        CliErrors.RequireModelDirectory("--model", modelDir);
        var model = MoeMixtral.Load(modelDir, dtype, on);
        Tensor ids = ReadInputIds(tokensPath, model.Config.VocabSize).To(on);
        var logits = model.Forward(ids);
        var loss = MixtralForCausalLM.NextTokenLoss(logits, ids);
        var outputs = new List<KeyValuePair<string, Tensor>>
        {
            new("logits", logits.Detach()),
            new("loss", loss.Detach().Reshape(1)),
        };
        if (grads)
        {
            model.ZeroGrad();
            loss.Backward();
            foreach (var (name, p) in model.NamedParameters())
                outputs.Add(new("grad." + name, p.Grad ?? Tensor.ZerosLike(p)));
        }
        TensorIO.Save(outPath, outputs);
        log.WriteLine($"eval ({dtype.Name()}): {ids.Shape[0]}x{ids.Shape[1]} tokens, loss {loss.Item():F6}, wrote {outputs.Count} tensors to {outPath}");
    }

    /// <summary>Reads and checks `input_ids`: int64 [batch, seq], seq ≥ 2, every id in [0, vocab).</summary>
    public static Tensor ReadInputIds(string path, int vocab)
    {
        using var file = SafetensorsFile.Open(path);
        if (!file.Contains("input_ids"))
            throw new CliException($"{path}: no tensor named input_ids (found: {string.Join(", ", file.Names)})");
        var entry = file.Read("input_ids");
        if (entry.Rank != 2 || entry.Shape[1] < 2)
            throw new CliException($"{path}: input_ids must be [batch, seq] with seq ≥ 2, got [{string.Join(",", entry.Shape)}]");
        if (entry.DType is not (SafetensorsDType.I64 or SafetensorsDType.I32))
            throw new CliException($"{path}: input_ids must be an integer tensor (I64), got {entry.DType}");
        var ids = entry.ToTensor();
        foreach (long id in ids.ToArray<long>())
            if (id < 0 || id >= vocab) throw new CliException($"{path}: token id {id} is outside the vocabulary [0, {vocab})");
        return ids;
    }
}
