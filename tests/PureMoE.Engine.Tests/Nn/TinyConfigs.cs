using PureMoE.Models;

namespace PureMoE.Engine.Tests.Nn;

/// <summary>Small Mixtral configurations shared by the tests.</summary>
internal static class TinyConfigs
{
    /// <summary>vocab 32, d 32, 2 layers, 4 experts, top-2, 4 heads over 2 kv heads.</summary>
    public static MixtralConfig Mixtral(int layers = 2, int experts = 4, int topK = 2) => new()
    {
        VocabSize = 32,
        HiddenSize = 32,
        IntermediateSize = 64,
        NumHiddenLayers = layers,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        NumLocalExperts = experts,
        NumExpertsPerTok = topK,
        RopeTheta = 10000,
        MaxPositionEmbeddings = 128,
    };

    public static Tensor Ids(long[] ids, int batch) => Tensor.FromArray(ids, batch, ids.Length / batch);

    public static double MaxAbsDiff(double[] a, double[] b)
    {
        Assert.Equal(a.Length, b.Length);
        double m = 0;
        for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs(a[i] - b[i]));
        return m;
    }
}
