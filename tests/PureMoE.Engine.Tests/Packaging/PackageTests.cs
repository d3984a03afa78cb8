using System.Diagnostics;
using System.IO.Compression;
using System.Xml.Linq;

namespace PureMoE.Engine.Tests.Packaging;

/// <summary>
/// The packages work for someone who only has NuGet: packs PureMoE.Engine and PureMoE.Moe from a copy of the
/// sources into a temporary folder feed, checks their nuspecs, restores examples/EmbedMoe (with its own
/// nuget.config) against that feed, builds and runs it, and checks its output. One test, the slowest of the suite
/// (a Release build of both libraries, ≈ 1 min on 2 cores). The packages get a unique prerelease version so the
/// machine's NuGet cache never serves a stale copy; that version is removed from the cache afterwards.
/// </summary>
public sealed class PackageTests
{
    private static readonly string[] Allowed = ["ILGPU", "ILGPU.Algorithms", "System.Numerics.Tensors"];

    [Fact]
    [Trait("Category", "Packaging")]
    public void PackedPackagesRestoreBuildAndRunEmbedMoe()
    {
        string? dotnet = FindDotnet();
        Assert.SkipWhen(dotnet is null, "the dotnet CLI is not on PATH: packing and building EmbedMoe needs it");

        string root = RepoPaths.Root;
        string temp = Path.Combine(Path.GetTempPath(), "puremoe-pack-" + Guid.NewGuid().ToString("N")[..12]);
        string version = "0.1.0-test." + DateTime.UtcNow.ToString("yyyyMMddHHmmssfff", System.Globalization.CultureInfo.InvariantCulture);
        string globalPackages = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        try
        {
            foreach (var file in new[] { "Directory.Build.props", "Directory.Build.targets", "Directory.Packages.props", "global.json", "LICENSE" })
                File.Copy(Path.Combine(root, file), Path.Combine(temp, file).EnsureDir());
            foreach (var dir in new[] { "engine/PureMoE.Engine", "moe/PureMoE.Moe", "examples/EmbedMoe" })
                CopySources(Path.Combine(root, dir), Path.Combine(temp, dir));
            string feed = Path.Combine(temp, "artifacts", "feed");

            // No .git in the copy: SourceLink has nothing to describe there (it is exercised by `dotnet pack` in the repo).
            foreach (var proj in new[] { "engine/PureMoE.Engine/PureMoE.Engine.csproj", "moe/PureMoE.Moe/PureMoE.Moe.csproj" })
                Run(dotnet!, temp, "pack", proj, "-c", "Release", "-o", feed, $"-p:PureMoEVersion={version}",
                    "-p:EnableSourceLink=false", "-p:EnableSourceControlManagerQueries=false");

            var files = Directory.GetFiles(feed).Select(Path.GetFileName).Order().ToArray();
            Assert.Equal([$"PureMoE.Engine.{version}.nupkg", $"PureMoE.Engine.{version}.snupkg",
                          $"PureMoE.Moe.{version}.nupkg", $"PureMoE.Moe.{version}.snupkg"], files);
            CheckPackage(Path.Combine(feed, $"PureMoE.Engine.{version}.nupkg"), "PureMoE.Engine", Allowed);
            CheckPackage(Path.Combine(feed, $"PureMoE.Moe.{version}.nupkg"), "PureMoE.Moe", [.. Allowed, "PureMoE.Engine"]);

            string app = Path.Combine(temp, "examples", "EmbedMoe");
            Run(dotnet!, app, "build", "-c", "Release", $"-p:PureMoEVersion={version}");
            string assets = File.ReadAllText(Path.Combine(app, "obj", "project.assets.json"));
            Assert.Contains($"\"PureMoE.Engine/{version}\"", assets);            // from the feed, through NuGet
            Assert.DoesNotContain("\"type\": \"project\"", assets);              // no project references

            string output = Run(dotnet!, app, Path.Combine(app, "bin", "Release", "net10.0", "EmbedMoe.dll"));
            foreach (var router in new[] { "topk", "rectify", "relu", "c2r" })
                Assert.Matches($@"router {router}: output \[2,6,16\] finite=True tokens=12 pairs=\d+ grad=True", output);
            Assert.Matches(@"train: loss \d+\.\d+ -> \d+\.\d+ decreased=True", output);
            Assert.Matches("generate: \"the cat\" -> \".{1,40}\" bytes=\\d+", output);
            Assert.Contains("scope: owned=2 freed=True", output);
            Assert.EndsWith("EmbedMoe OK", output.TrimEnd());
        }
        finally
        {
            TryDelete(temp);
            foreach (var id in new[] { "puremoe.engine", "puremoe.moe" })
                TryDelete(Path.Combine(globalPackages, id, version));
        }
    }

    /// <summary>Id, version-independent metadata, files and dependencies of one package.</summary>
    private static void CheckPackage(string nupkg, string id, string[] allowedDependencies)
    {
        using var zip = ZipFile.OpenRead(nupkg);
        var names = zip.Entries.Select(e => e.FullName).ToArray();
        Assert.Contains($"lib/net10.0/{id}.dll", names);
        Assert.Contains($"lib/net10.0/{id}.xml", names);                          // XML docs
        Assert.Contains("README.md", names);
        Assert.Contains("LICENSE", names);
        var nuspecEntry = zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal));
        using var stream = nuspecEntry.Open();
        var doc = XDocument.Load(stream);
        var ns = doc.Root!.Name.Namespace;
        var meta = doc.Root.Element(ns + "metadata")!;
        Assert.Equal(id, meta.Element(ns + "id")!.Value);
        Assert.Equal("PureMoE contributors", meta.Element(ns + "authors")!.Value);
        Assert.Equal("MIT", meta.Element(ns + "license")!.Value);
        Assert.Equal("README.md", meta.Element(ns + "readme")!.Value);
        Assert.False(string.IsNullOrWhiteSpace(meta.Element(ns + "description")?.Value));
        Assert.Contains("mixture-of-experts", meta.Element(ns + "tags")!.Value);
        var deps = meta.Descendants(ns + "dependency").Select(d => d.Attribute("id")!.Value).Distinct().ToArray();
        Assert.NotEmpty(deps);
        Assert.All(deps, d => Assert.Contains(d, allowedDependencies));
    }

    private static string Run(string dotnet, string workingDirectory, params string[] args)
    {
        var psi = new ProcessStartInfo(dotnet)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (args[0] is "pack" or "build")
            foreach (var a in new[] { "-nologo", "-v", "q", "-nodeReuse:false", "--disable-build-servers" }) psi.ArgumentList.Add(a);
        // The test host's MSBuild settings must not leak into the child builds.
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase)
                     || k.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase) || k == "DOTNET_HOST_PATH").ToArray())
            psi.Environment.Remove(key);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(TimeSpan.FromMinutes(4)))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"dotnet {string.Join(' ', args)} timed out");
        }
        Assert.True(p.ExitCode == 0, $"dotnet {string.Join(' ', args)} exited {p.ExitCode}\n{stdout}\n{stderr.Result}");
        return stdout;
    }

    private static string? FindDotnet()
    {
        string exe = OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, exe);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    private static void CopySources(string from, string to)
    {
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            string rel = Path.GetRelativePath(from, file);
            string first = rel.Split(Path.DirectorySeparatorChar)[0];
            if (first is "bin" or "obj") continue;
            File.Copy(file, Path.Combine(to, rel).EnsureDir());
        }
    }

    private static void TryDelete(string dir)
    {
        try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

internal static class PathExtensions
{
    /// <summary>Creates the parent folder of a file path and returns the path.</summary>
    public static string EnsureDir(this string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        return path;
    }
}
