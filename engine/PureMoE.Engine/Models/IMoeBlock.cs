namespace PureMoE.Models;

/// <summary>The mixture-of-experts sub-layer of a Mixtral decoder layer, as the layer calls it.</summary>
public interface IMoeBlock
{
    /// <summary>x [..., d] → the same shape.</summary>
    Tensor Forward(Tensor x);

    /// <summary>The router's regularisers (aux, z, sparsity) of the last forward, or null.</summary>
    Tensor? LastRegularizationLoss { get; }
}

/// <summary>Builds the MoE sub-layer of decoder layer <paramref name="layerIndex"/>: a <see cref="Nn.Module"/> that implements <see cref="IMoeBlock"/>.</summary>
public delegate Nn.Module MoeBlockFactory(MixtralConfig config, int layerIndex, Rng rng, DType dtype, Device? device);
