using PureMoE.IO;

namespace PureMoE.Engine.Tests.IO;

/// <summary>dtype helpers and typed conversions (F16/BF16 bit patterns, rounding, NaN/Inf).</summary>
public sealed class SafetensorsConversionTests
{
    [Fact]
    public void DType_SizesAndNames()
    {
        foreach (SafetensorsDType d in Enum.GetValues<SafetensorsDType>())
        {
            Assert.Equal(d.ToString(), d.ToJsonName());
            Assert.True(SafetensorsDTypeExtensions.TryParseJsonName(d.ToJsonName(), out SafetensorsDType parsed));
            Assert.Equal(d, parsed);
        }
        Assert.Equal([4, 8, 2, 2, 8, 4, 1, 1], Enum.GetValues<SafetensorsDType>().Select(d => d.ElementSize()));
        Assert.False(SafetensorsDTypeExtensions.TryParseJsonName("0", out _));
        Assert.False(SafetensorsDTypeExtensions.TryParseJsonName("f32", out _));
        Assert.False(SafetensorsDTypeExtensions.TryParseJsonName(null, out _));
    }

    [Fact]
    public void F16_KnownBitPatterns()
    {
        Half[] values = [(Half)1.0f, (Half)(-2.0f), Half.MaxValue, Half.PositiveInfinity, Half.NegativeInfinity, Half.Epsilon, Half.NaN, (Half)0.0f];
        SafetensorsTensor t = SafetensorsTensor.FromFloat16("h", values, [8]);
        byte[] b = t.Data.ToArray();
        ushort[] bits = Enumerable.Range(0, 8).Select(i => (ushort)(b[2 * i] | (b[2 * i + 1] << 8))).ToArray();
        Assert.Equal((ushort)0x3C00, bits[0]);
        Assert.Equal((ushort)0xC000, bits[1]);
        Assert.Equal((ushort)0x7BFF, bits[2]);
        Assert.Equal((ushort)0x7C00, bits[3]);
        Assert.Equal((ushort)0xFC00, bits[4]);
        Assert.Equal((ushort)0x0001, bits[5]);
        Assert.Equal(0x7C00, bits[6] & 0x7C00);
        Assert.NotEqual(0, bits[6] & 0x03FF);

        float[] f = t.ToFloat32();
        Assert.Equal([1f, -2f, 65504f, float.PositiveInfinity, float.NegativeInfinity, MathF.Pow(2, -24)], f[..6]);
        Assert.True(float.IsNaN(f[6]));
        Assert.Equal(values.Select(h => BitConverter.HalfToUInt16Bits(h)), t.ToFloat16().Select(h => BitConverter.HalfToUInt16Bits(h)));
        Assert.Equal(65504.0, t.ToFloat64()[2]);
    }

    [Fact]
    public void F16_FromHalfUsesRoundToNearestEven()
    {
        // 1 + 2^-11 is exactly halfway between 1 and the next half (1 + 2^-10): ties to even -> 1.
        Assert.Equal((ushort)0x3C00, BitConverter.HalfToUInt16Bits((Half)(1f + MathF.Pow(2, -11))));
        // 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even) -> rounds up.
        Assert.Equal((ushort)0x3C02, BitConverter.HalfToUInt16Bits((Half)(1f + 3 * MathF.Pow(2, -11))));
    }

    [Theory]
    [InlineData(0x3F800000u, (ushort)0x3F80)] // 1.0 exact
    [InlineData(0xBF800000u, (ushort)0xBF80)] // -1.0
    [InlineData(0x3F808000u, (ushort)0x3F80)] // tie, lower is even -> down
    [InlineData(0x3F818000u, (ushort)0x3F82)] // tie, lower is odd -> up to even
    [InlineData(0x3F808001u, (ushort)0x3F81)] // just above the tie -> up
    [InlineData(0x3F807FFFu, (ushort)0x3F80)] // just below the tie -> down
    [InlineData(0x7F7FFFFFu, (ushort)0x7F80)] // float.MaxValue overflows to +Inf
    [InlineData(0x7F800000u, (ushort)0x7F80)] // +Inf
    [InlineData(0xFF800000u, (ushort)0xFF80)] // -Inf
    [InlineData(0x00000001u, (ushort)0x0000)] // smallest subnormal rounds to +0
    [InlineData(0x80000000u, (ushort)0x8000)] // -0
    [InlineData(0x40490FDBu, (ushort)0x4049)] // pi
    public void BF16_RoundToNearestEven(uint floatBits, ushort expected)
    {
        float value = BitConverter.UInt32BitsToSingle(floatBits);
        SafetensorsTensor t = SafetensorsTensor.FromBFloat16("b", [value], [1]);
        Assert.Equal([expected], t.ToBFloat16Bits());
        Assert.Equal(BitConverter.UInt32BitsToSingle((uint)expected << 16), t.ToFloat32()[0]);
    }

    [Theory]
    [InlineData(0x7FC00000u)] // canonical quiet NaN
    [InlineData(0x7F800001u)] // signalling NaN whose payload is only in the low bits: must not become Inf
    [InlineData(0xFFFFFFFFu)] // negative NaN with all-ones payload: must not carry into the sign
    public void BF16_NaNStaysNaN(uint floatBits)
    {
        ushort bits = SafetensorsTensor.FromBFloat16("n", [BitConverter.UInt32BitsToSingle(floatBits)], [1]).ToBFloat16Bits()[0];
        Assert.Equal(0x7F80, bits & 0x7F80);
        Assert.NotEqual(0, bits & 0x007F);
        Assert.Equal(floatBits >> 31, (uint)bits >> 15);
    }

    [Fact]
    public void BF16_FromBitsIsLossless()
    {
        ushort[] bits = [0x0000, 0x8000, 0x3F80, 0x7F80, 0xFF80, 0x7FC1, 0x0001];
        SafetensorsTensor t = SafetensorsTensor.FromBFloat16Bits("b", bits, [7]);
        Assert.Equal(bits, t.ToBFloat16Bits());
        Assert.Equal(new byte[] { 0x80, 0x3F }, t.Data.Slice(4, 2).ToArray());
    }

    [Fact]
    public void ToFloat32_FromEveryDType()
    {
        Assert.Equal([1.5f, -2f], SafetensorsTensor.FromFloat32("a", [1.5f, -2f], [2]).ToFloat32());
        Assert.Equal([1.5f, -2f], SafetensorsTensor.FromFloat64("a", [1.5, -2], [2]).ToFloat32());
        Assert.Equal([1.5f, -2f], SafetensorsTensor.FromFloat16("a", [(Half)1.5f, (Half)(-2f)], [2]).ToFloat32());
        Assert.Equal([1.5f, -2f], SafetensorsTensor.FromBFloat16("a", [1.5f, -2f], [2]).ToFloat32());
        Assert.Equal([3f, -4f], SafetensorsTensor.FromInt64("a", [3, -4], [2]).ToFloat32());
        Assert.Equal([3f, -4f], SafetensorsTensor.FromInt32("a", [3, -4], [2]).ToFloat32());
        Assert.Equal([3f, 255f], SafetensorsTensor.FromUInt8("a", [3, 255], [2]).ToFloat32());
        Assert.Equal([1f, 0f], SafetensorsTensor.FromBool("a", [true, false], [2]).ToFloat32());
        Assert.Equal([0.1], SafetensorsTensor.FromFloat64("a", [0.1], [1]).ToFloat64());
        Assert.Equal([(double)0.1f], SafetensorsTensor.FromFloat32("a", [0.1f], [1]).ToFloat64());
    }

    [Fact]
    public void ToInt64_FromIntegerDTypes_AndRejectsFloats()
    {
        Assert.Equal([long.MinValue, long.MaxValue], SafetensorsTensor.FromInt64("a", [long.MinValue, long.MaxValue], [2]).ToInt64());
        Assert.Equal([int.MinValue, 7L], SafetensorsTensor.FromInt32("a", [int.MinValue, 7], [2]).ToInt64());
        Assert.Equal([0L, 255L], SafetensorsTensor.FromUInt8("a", [0, 255], [2]).ToInt64());
        Assert.Equal([1L, 0L], SafetensorsTensor.FromBool("a", [true, false], [2]).ToInt64());
        Assert.Equal([1L], new SafetensorsTensor("a", SafetensorsDType.BOOL, [1], [2]).ToInt64()); // non-zero byte is true
        var ex = Assert.Throws<InvalidOperationException>(() => SafetensorsTensor.FromFloat32("w", [1f], [1]).ToInt64());
        Assert.Contains("'w'", ex.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => SafetensorsTensor.FromFloat32("w", [1f], [1]).ToFloat16());
    }

    [Fact]
    public void Data_IsLittleEndianRowMajor_AndShapeIsACopy()
    {
        SafetensorsTensor t = SafetensorsTensor.FromInt32("a", [0x01020304, 5, 6, 7, 8, 9], [2, 3]);
        Assert.Equal(new byte[] { 4, 3, 2, 1 }, t.Data[..4].ToArray());
        Assert.Equal(6, t.ElementCount);
        Assert.Equal(2, t.Rank);
        int[] shape = t.Shape;
        shape[0] = 99;
        Assert.Equal([2, 3], t.Shape);
        Assert.Equal("a: I32[2,3]", t.ToString());
    }
}
