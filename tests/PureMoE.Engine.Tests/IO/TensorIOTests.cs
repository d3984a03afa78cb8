using PureMoE.IO;

namespace PureMoE.Engine.Tests.IO;

public class TensorIOTests
{
    [Fact]
    public void TensorsRoundTripWithDTypesAndShapes()
    {
        string dir = Directory.CreateTempSubdirectory("puremoe-io").FullName;
        string path = Path.Combine(dir, "t.safetensors");
        var rng = new Rng(7);
        var tensors = new Dictionary<string, Tensor>
        {
            ["a"] = Tensor.Randn(new Shape(3, 4), rng),
            ["b"] = Tensor.Randn(new Shape(2), rng, dtype: DType.Float64),
            ["ids"] = Tensor.FromArray(new long[] { 1, -2, 3 }, 3),
            ["scalar"] = Tensor.Scalar(2.5),
        };
        TensorIO.Save(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
        var back = TensorIO.Load(path);
        Assert.Equal(tensors.Keys.Order(), back.Keys.Order());
        foreach (var (name, t) in tensors)
        {
            Assert.Equal(t.Shape, back[name].Shape);
            Assert.Equal(t.DType, back[name].DType);
            Assert.Equal(t.ToDoubleArray(), back[name].ToDoubleArray());
        }
        Directory.Delete(dir, true);
    }

    [Fact]
    public void HalfPrecisionEntriesLoadAsFloat32()
    {
        var entry = SafetensorsTensor.FromBFloat16("w", [1.5f, -2f], [2]);
        var t = entry.ToTensor();
        Assert.Equal(DType.Float32, t.DType);
        Assert.Equal(new float[] { 1.5f, -2f }, t.ToArray<float>());
    }
}
