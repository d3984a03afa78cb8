namespace PureMoE.Nn;

/// <summary>
/// Root-mean-square layer norm (Llama/Mixtral): y = x / √(mean(x²) + eps) · weight over the last axis; weight
/// starts at ones, so a fresh layer only rescales.
/// </summary>
public sealed class RmsNorm : Module
{
    /// <summary>Creates the layer for vectors of size <paramref name="dim"/>.</summary>
    public RmsNorm(int dim, double eps = 1e-6, DType dtype = DType.Float32, Device? device = null)
    {
        Dim = dim;
        Eps = eps;
        RegisterParameter("weight", Tensor.Ones(new Shape(dim), dtype, device));
    }

    /// <summary>Normalised size.</summary>
    public int Dim { get; }

    /// <summary>Added to the mean square for stability.</summary>
    public double Eps { get; }

    /// <summary>The scale [dim].</summary>
    public Tensor Weight => GetParameter("weight");

    /// <summary>x [..., dim] → [..., dim].</summary>
    public Tensor Forward(Tensor x) => x.RmsNorm(Weight, Eps);
}
