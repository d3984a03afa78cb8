namespace PureMoE.Moe.Parallel;

/// <summary>
/// Which device holds which expert. Contiguous by default (device p holds experts [p·E/P, (p+1)·E/P)); any map is
/// allowed (C2R's co-located placement is one). Rectify's Intra-GPU rectification reads it: a dropped token goes
/// to the best expert on its own device.
/// </summary>
public sealed class ExpertPlacement
{
    private readonly int[] _deviceOfExpert;

    /// <summary>A placement from an explicit map expert → device.</summary>
    public ExpertPlacement(int[] deviceOfExpert, int devices)
    {
        if (devices < 1) throw new ArgumentException($"ExpertPlacement: needs at least one device, got {devices}");
        foreach (int d in deviceOfExpert)
            if (d < 0 || d >= devices)
                throw new ArgumentException($"ExpertPlacement: device {d} is outside [0, {devices}) in [{string.Join(",", deviceOfExpert)}]");
        _deviceOfExpert = (int[])deviceOfExpert.Clone();
        Devices = devices;
    }

    /// <summary>P devices holding E/P consecutive experts each (E must be a multiple of P).</summary>
    public static ExpertPlacement Contiguous(int experts, int devices)
    {
        if (devices < 1 || experts % devices != 0)
            throw new ArgumentException($"ExpertPlacement: {experts} experts cannot be split evenly over {devices} devices");
        int perDevice = experts / devices;
        return new ExpertPlacement(Enumerable.Range(0, experts).Select(e => e / perDevice).ToArray(), devices);
    }

    /// <summary>Every expert on one device.</summary>
    public static ExpertPlacement Single(int experts) => Contiguous(experts, 1);

    /// <summary>Number of experts.</summary>
    public int Experts => _deviceOfExpert.Length;

    /// <summary>Number of devices.</summary>
    public int Devices { get; }

    /// <summary>The device holding expert <paramref name="expert"/>.</summary>
    public int DeviceOf(int expert) => _deviceOfExpert[expert];

    /// <summary>The experts on device <paramref name="device"/>, ascending.</summary>
    public int[] ExpertsOn(int device) => Enumerable.Range(0, Experts).Where(e => _deviceOfExpert[e] == device).ToArray();

    /// <summary>A copy of the map expert → device.</summary>
    public int[] ToArray() => (int[])_deviceOfExpert.Clone();

    /// <summary>"[0,0,1,1] on 2 devices".</summary>
    public override string ToString() => $"[{string.Join(",", _deviceOfExpert)}] on {Devices} device(s)";
}
