namespace PureMoE.Nn;

/// <summary>A lookup table of vectors (torch.nn.Embedding): weight [num, dim]; int64 ids [...] → [..., dim].</summary>
public sealed class Embedding : Module
{
    /// <summary>Creates the table with Normal(0, std²) entries from <paramref name="rng"/> (PyTorch's default std is 1; Hugging Face uses 0.02).</summary>
    public Embedding(int numEmbeddings, int embeddingDim, Rng rng, double initStd = 1.0,
        DType dtype = DType.Float32, Device? device = null)
    {
        NumEmbeddings = numEmbeddings;
        EmbeddingDim = embeddingDim;
        RegisterParameter("weight", Tensor.Randn(new Shape(numEmbeddings, embeddingDim), rng, initStd, dtype, device));
    }

    /// <summary>Number of rows (vocabulary size).</summary>
    public int NumEmbeddings { get; }

    /// <summary>Vector size.</summary>
    public int EmbeddingDim { get; }

    /// <summary>The table [num, dim].</summary>
    public Tensor Weight => GetParameter("weight");

    /// <summary>Rows of the table for int64 <paramref name="ids"/> of any shape → [..ids, dim].</summary>
    public Tensor Forward(Tensor ids) => Weight.Embedding(ids);
}
