using PureMoE.Nn;

namespace PureMoE.Engine.Tests.Nn;

public class DecoderBlockTests
{
    private sealed class TwoBlocks : Module
    {
        public TwoBlocks(Rng rng) =>
            Layers = RegisterModule("layers", new ModuleList<DecoderBlock>(
                Enumerable.Range(0, 2).Select(i => new DecoderBlock(16, 32, 4, 2, 10000, 1e-6, rng, layerIndex: i))));

        public ModuleList<DecoderBlock> Layers { get; }
    }

    [Fact]
    public void DenseBlockHasLlamaNamesAndIsDifferentiable()
    {
        var model = new TwoBlocks(new Rng(1));
        var names = model.NamedParameters().Select(p => p.Name).Where(n => n.StartsWith("layers.1.", StringComparison.Ordinal)).ToList();
        Assert.Equal(new[]
        {
            "layers.1.self_attn.q_proj.weight", "layers.1.self_attn.k_proj.weight", "layers.1.self_attn.v_proj.weight",
            "layers.1.self_attn.o_proj.weight", "layers.1.mlp.w1.weight", "layers.1.mlp.w2.weight", "layers.1.mlp.w3.weight",
            "layers.1.input_layernorm.weight", "layers.1.post_attention_layernorm.weight",
        }, names);

        var x = Tensor.Randn(new Shape(2, 5, 16), new Rng(2));
        var h = x;
        foreach (var block in model.Layers) h = block.Forward(h);
        Assert.Equal(x.Shape, h.Shape);
        h.Square().Mean().Backward();
        Assert.All(model.Parameters(), p => Assert.NotNull(p.Grad));
    }

    [Fact]
    public void RegisteringADuplicateOrDottedNameFails()
    {
        var list = new ModuleList<RmsNorm>([new RmsNorm(4)]);
        Assert.Equal("0.weight", list.NamedParameters().Single().Name);
        Assert.Throws<ArgumentException>(() => new Bad());
    }

    private sealed class Bad : Module
    {
        public Bad() => RegisterParameter("a.b", Tensor.Zeros(new Shape(1)));
    }
}
