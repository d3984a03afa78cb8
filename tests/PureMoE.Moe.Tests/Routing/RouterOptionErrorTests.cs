using PureMoE.Moe.Parallel;
using PureMoE.Moe.Routing;

namespace PureMoE.Moe.Tests.Routing;

/// <summary>Invalid options and inputs throw ArgumentExceptions naming the option and its value.</summary>
public class TopKErrorTests
{
    public static TheoryData<TopKOptions, string[]> InvalidTopK => new()
    {
        { new TopKOptions { K = 5 }, ["TopKOptions.K", "5", "[1, 4]"] },
        { new TopKOptions { K = 0 }, ["TopKOptions.K", "0"] },
        { new TopKOptions { K = -1 }, ["TopKOptions.K", "-1"] },
        { new TopKOptions { K = 2, CapacityFactor = 0 }, ["TopKOptions.CapacityFactor", "0"] },
        { new TopKOptions { K = 2, CapacityFactor = -0.5 }, ["TopKOptions.CapacityFactor", "-0.5"] },
        { new TopKOptions { K = 2, CapacityFactor = double.NaN }, ["TopKOptions.CapacityFactor", "NaN"] },
        { new TopKOptions { K = 1, Normalization = TopKNormalization.PostSoftmax }, ["PostSoftmax", "K = 1"] },
        { new TopKOptions { K = 2, StraightThroughTop1 = true }, ["StraightThroughTop1", "K = 2"] },
        { new TopKOptions { K = 2, PadToCapacity = true }, ["PadToCapacity", "CapacityFactor"] },
        { new TopKOptions { K = 2, AuxLossCoeff = -1 }, ["AuxLossCoeff", "-1"] },
        { new TopKOptions { K = 2, ZLossCoeff = double.PositiveInfinity }, ["ZLossCoeff", "Infinity"] },
    };

    [Theory]
    [MemberData(nameof(InvalidTopK))]
    public void InvalidTopKOptionsThrow(TopKOptions options, string[] mentions)
    {
        var error = Assert.Throws<ArgumentException>(() => new TopKRouter(4, options));
        foreach (var m in mentions) Assert.Contains(m, error.Message);
    }

    [Fact]
    public void PlacementOfAnotherExpertCountThrows()
    {
        var router = new TopKRouter(4, new TopKOptions { K = 2 });
        var context = new RoutingContext { Placement = ExpertPlacement.Contiguous(6, 2) };
        var error = Assert.Throws<ArgumentException>(() => router.Route(Tensor.Zeros(new Shape(3, 4)), context));
        Assert.Contains("context.Placement covers 6 experts", error.Message);
        Assert.Contains("the router has 4", error.Message);
    }

    [Fact]
    public void SourceDeviceOutsideThePlacementThrows()
    {
        var router = new TopKRouter(4, new TopKOptions { K = 2 });
        var context = new RoutingContext { Placement = ExpertPlacement.Contiguous(4, 2), SourceDevice = 2 };
        var error = Assert.Throws<ArgumentException>(() => router.Route(Tensor.Zeros(new Shape(3, 4)), context));
        Assert.Contains("context.SourceDevice = 2", error.Message);
    }

    [Fact]
    public void LogitsOfTheWrongShapeThrow()
    {
        var router = new TopKRouter(4, new TopKOptions { K = 2 });
        var error = Assert.Throws<ArgumentException>(() => router.Route(Tensor.Zeros(new Shape(3, 5)), RoutingContext.SingleDevice(4)));
        Assert.Contains("[3,5]", error.Message);
    }
}

/// <summary>Invalid Rectify options throw ArgumentExceptions naming the option and its value.</summary>
public class RectifyErrorTests
{
    public static TheoryData<RectifyOptions, string[]> InvalidRectify => new()
    {
        { new RectifyOptions { K = 5, FillIn = false }, ["RectifyOptions.K", "5", "[1, 4]"] },
        { new RectifyOptions { K = 0 }, ["RectifyOptions.K", "0"] },
        { new RectifyOptions { K = 4, FillIn = true }, ["RectifyOptions.FillIn", "K = 4", "4 experts"] },
        { new RectifyOptions { K = 1, CapacityFactor = 0 }, ["RectifyOptions.CapacityFactor", "0"] },
        { new RectifyOptions { K = 1, CapacityFactor = -2 }, ["RectifyOptions.CapacityFactor", "-2"] },
        { new RectifyOptions { K = 1, AuxLossCoeff = -0.01 }, ["RectifyOptions.AuxLossCoeff", "-0.01"] },
        { new RectifyOptions { K = 1, ZLossCoeff = double.NaN }, ["RectifyOptions.ZLossCoeff", "NaN"] },
    };

    [Theory]
    [MemberData(nameof(InvalidRectify))]
    public void InvalidRectifyOptionsThrow(RectifyOptions options, string[] mentions)
    {
        var error = Assert.Throws<ArgumentException>(() => new RectifyRouter(4, options));
        foreach (var m in mentions) Assert.Contains(m, error.Message);
    }

    [Fact]
    public void PlacementOfAnotherExpertCountThrows()
    {
        var router = new RectifyRouter(4, new RectifyOptions());
        var context = new RoutingContext { Placement = PureMoE.Moe.Parallel.ExpertPlacement.Contiguous(8, 2) };
        var error = Assert.Throws<ArgumentException>(() => router.Route(Tensor.Zeros(new Shape(3, 4)), context));
        Assert.Contains("context.Placement covers 8 experts", error.Message);
    }
}
