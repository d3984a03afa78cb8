using PureMoE.Optim;

namespace PureMoE.Engine.Tests.Optim;

public class LrScheduleTests
{
    [Fact]
    public void WarmupPeakCosineAndFloor()
    {
        var s = new LrSchedule(peakLr: 1e-3, warmupSteps: 10, totalSteps: 110, minLr: 1e-4);
        Assert.Equal(0, s.LearningRate(0));
        Assert.Equal(5e-4, s.LearningRate(5), 15);
        Assert.Equal(1e-3, s.LearningRate(10), 15);                   // peak at the end of warmup
        Assert.Equal(5.5e-4, s.LearningRate(60), 15);                  // halfway down: (peak + min) / 2
        Assert.Equal(1e-4 + 9e-4 * 0.5 * (1 + Math.Cos(Math.PI * 0.25)), s.LearningRate(35), 15);
        Assert.Equal(1e-4, s.LearningRate(110), 15);                   // reaches the floor
        Assert.Equal(1e-4, s.LearningRate(1000), 15);                  // and stays
        for (int step = 10; step < 110; step++) Assert.True(s.LearningRate(step + 1) <= s.LearningRate(step));
    }

    [Fact]
    public void NoWarmupStartsAtPeak()
    {
        var s = new LrSchedule(peakLr: 2.0, warmupSteps: 0, totalSteps: 4);
        Assert.Equal(2.0, s.LearningRate(0));
        Assert.Equal(1.0, s.LearningRate(2), 12);
        Assert.Equal(0.0, s.LearningRate(4));
    }

    [Fact]
    public void InvalidArgumentsAreRejected()
    {
        Assert.Throws<ArgumentException>(() => new LrSchedule(1, 10, 5));
        Assert.Throws<ArgumentException>(() => new LrSchedule(1, 0, 5, minLr: 2));
    }
}
