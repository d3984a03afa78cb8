using PureMoE.Models;
using PureMoE.Moe.Models;

public static class LoadAndGenerate
{
    // A Mixtral-format directory (config.json + model.safetensors), e.g. from `puremoe train --out DIR`.
    public static string Run(string modelDir, string prompt)
    {
        var model = MoeMixtral.Load(modelDir);                 // the router named in config.json, HF weight names
        model.Eval();
        return TextGeneration.Generate(model, prompt, maxNewTokens: 24);   // greedy, byte-level
    }
}
