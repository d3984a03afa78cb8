namespace PureMoE.Optim;

/// <summary>
/// Linear warmup then cosine decay, the usual LLM schedule: the rate rises from 0 at step 0 to
/// <see cref="PeakLr"/> at step <see cref="WarmupSteps"/>, then follows half a cosine down to <see cref="MinLr"/>
/// at step <see cref="TotalSteps"/>, and stays there. (Hugging Face's get_cosine_schedule_with_warmup with a floor.)
/// </summary>
public sealed class LrSchedule
{
    /// <summary>Creates the schedule; needs 0 ≤ warmupSteps ≤ totalSteps and 0 ≤ minLr ≤ peakLr.</summary>
    public LrSchedule(double peakLr, int warmupSteps, int totalSteps, double minLr = 0)
    {
        if (warmupSteps < 0 || totalSteps < warmupSteps || minLr < 0 || minLr > peakLr)
            throw new ArgumentException($"LrSchedule: need 0 ≤ warmup ({warmupSteps}) ≤ total ({totalSteps}) and 0 ≤ min ({minLr}) ≤ peak ({peakLr})");
        PeakLr = peakLr;
        WarmupSteps = warmupSteps;
        TotalSteps = totalSteps;
        MinLr = minLr;
    }

    /// <summary>The rate at the end of warmup.</summary>
    public double PeakLr { get; }

    /// <summary>Steps of linear warmup.</summary>
    public int WarmupSteps { get; }

    /// <summary>The step at which decay reaches <see cref="MinLr"/>.</summary>
    public int TotalSteps { get; }

    /// <summary>The floor of the decay.</summary>
    public double MinLr { get; }

    /// <summary>The learning rate for (0-based) <paramref name="step"/>.</summary>
    public double LearningRate(long step)
    {
        if (step < WarmupSteps) return PeakLr * step / WarmupSteps;
        if (step >= TotalSteps) return TotalSteps == WarmupSteps ? PeakLr : MinLr;
        double progress = (double)(step - WarmupSteps) / (TotalSteps - WarmupSteps);
        return MinLr + (PeakLr - MinLr) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}
