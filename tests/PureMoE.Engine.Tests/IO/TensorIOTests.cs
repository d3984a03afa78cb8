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

    [Fact]
    public void SaveWritesViewsAndDevicelessCopiesByteForByteLikeTheEntryWriter()
    {
        // Save streams each tensor from its own memory; the file must be exactly what writing materialised copies gives.
        string dir = Directory.CreateTempSubdirectory("puremoe-io").FullName;
        var rng = new Rng(11);
        var big = Tensor.Randn(new Shape(6, 5), rng);
        var tensors = new Dictionary<string, Tensor>
        {
            ["dense"] = Tensor.Randn(new Shape(4, 3), rng),
            ["narrowed"] = big.Narrow(0, 2, 3),          // contiguous, at an offset into its storage
            ["transposed"] = big.Transpose(0, 1),        // not contiguous
            ["f64"] = Tensor.Randn(new Shape(2, 2), rng, dtype: DType.Float64).Transpose(0, 1),
            ["ids"] = Tensor.FromArray(new long[] { 5, -6, 7, 8 }, 2, 2).Narrow(0, 1, 1),
            ["empty"] = Tensor.Zeros(new Shape(0, 3)),
        };
        string streamed = Path.Combine(dir, "streamed.safetensors"), copied = Path.Combine(dir, "copied.safetensors");
        TensorIO.Save(streamed, tensors, new Dictionary<string, string> { ["format"] = "pt" });
        SafetensorsWriter.Write(copied, tensors.Select(kv => kv.Value.ToSafetensors(kv.Key)), new Dictionary<string, string> { ["format"] = "pt" });
        Assert.Equal(File.ReadAllBytes(copied), File.ReadAllBytes(streamed));
        var back = TensorIO.Load(streamed);
        foreach (var (name, t) in tensors) Assert.Equal(t.ToDoubleArray(), back[name].ToDoubleArray());
        Directory.Delete(dir, true);
    }

    [Fact]
    public void ReadIntoFillsATensorInPlaceFromAnyStoredDType()
    {
        string dir = Directory.CreateTempSubdirectory("puremoe-io").FullName;
        string path = Path.Combine(dir, "t.safetensors");
        SafetensorsWriter.Write(path,
        [
            SafetensorsTensor.FromFloat32("f32", [1.5f, -2f, 3.25f], [3]),
            SafetensorsTensor.FromFloat64("f64", [0.1, 0.2, 0.3], [3]),
            SafetensorsTensor.FromBFloat16("bf16", [1.5f, -2f, 4f], [3]),
        ]);
        using var file = SafetensorsFile.Open(path);
        var target = Tensor.Zeros(new Shape(3));
        file.ReadInto("f32", target);                   // straight from the mapping
        Assert.Equal(new[] { 1.5f, -2f, 3.25f }, target.ToArray<float>());
        file.ReadInto("f64", target);                   // converted to the target's dtype
        Assert.Equal(new[] { 0.1f, 0.2f, 0.3f }, target.ToArray<float>());
        file.ReadInto("bf16", target);
        Assert.Equal(new[] { 1.5f, -2f, 4f }, target.ToArray<float>());
        var wide = Tensor.Zeros(new Shape(3), DType.Float64);
        file.ReadInto("f64", wide);
        Assert.Equal(new[] { 0.1, 0.2, 0.3 }, wide.ToArray<double>());
        file.ReadInto("f32", wide);
        Assert.Equal(new[] { 1.5, -2, 3.25 }, wide.ToArray<double>());
        Assert.Throws<ArgumentException>(() => file.ReadInto("f32", Tensor.Zeros(new Shape(2))));
        Directory.Delete(dir, true);
    }
}
