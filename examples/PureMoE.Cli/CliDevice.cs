using System.CommandLine;

namespace PureMoE.Cli;

/// <summary>The --device option: where a command's model lives and runs.</summary>
public static class CliDevice
{
    /// <summary>
    /// A --device option (default cpu). A malformed name is a usage error at parse time; a well-formed name of a
    /// device this machine lacks is reported when the command runs (<see cref="Resolve"/>).
    /// </summary>
    public static Option<string> Create(string description = "where the model lives and runs: cpu (the fast SIMD path), cuda, cuda:N, opencl, opencl:N, ilgpu-cpu (ILGPU's GPU emulator: slow, for checking the GPU path), ilgpu-wide (the emulator shaped like a CUDA GPU: the kernels a GPU runs)")
    {
        var option = new Option<string>("--device") { Description = description, DefaultValueFactory = _ => "cpu" };
        option.Validators.Add(r =>
        {
            string? name = r.Tokens.Count > 0 ? r.Tokens[^1].Value : null;
            if (name is null) return;
            try { Device.Parse(name); }
            catch (ArgumentException e) { r.AddError($"--device {name}: {e.Message.Split(" (Parameter", 2)[0]}"); }
            catch (Exception) { /* well-formed but absent: Resolve says so when the command runs, in one line */ }
        });
        return option;
    }

    /// <summary>
    /// The device named <paramref name="name"/>; a malformed name or a device that does not exist here is a
    /// <see cref="CliException"/> naming what was asked for and (for ILGPU devices) the devices there are.
    /// </summary>
    public static Device Resolve(string name)
    {
        try
        {
            return Device.Parse(name);
        }
        catch (ArgumentException e)
        {
            throw new CliException($"--device {name}: {e.Message.Split(" (Parameter", 2)[0]}");
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException)
        {
            throw new CliException($"--device {name}: no such device on this machine ({e.Message})");
        }
    }
}
