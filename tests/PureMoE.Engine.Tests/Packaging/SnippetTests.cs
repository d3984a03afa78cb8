using System.Text.RegularExpressions;
using PureMoE.Models;
using PureMoE.Moe.Models;

namespace PureMoE.Engine.Tests.Packaging;

/// <summary>
/// The code examples of README.md, docs/ and the package READMEs are the files of docs/snippets, shown verbatim
/// after a marker line <c>&lt;!-- snippet: docs/snippets/NAME.cs --&gt;</c>. These files are compiled into this
/// test project, the tests below run them, and <see cref="DocsShowTheSnippetFilesVerbatim"/> fails on any drift.
/// </summary>
public sealed partial class SnippetTests
{
    private static readonly string[] Documents =
        ["README.md", "docs", "engine/PureMoE.Engine/README.md", "moe/PureMoE.Moe/README.md"];

    [GeneratedRegex(@"<!-- snippet: (?<file>\S+) -->\r?\n```csharp\r?\n(?<code>.*?)```", RegexOptions.Singleline)]
    private static partial Regex Marker();

    [Fact]
    public void DocsShowTheSnippetFilesVerbatim()
    {
        var docs = Documents.SelectMany(d => Directory.Exists(Path.Combine(RepoPaths.Root, d))
            ? Directory.GetFiles(Path.Combine(RepoPaths.Root, d), "*.md", SearchOption.AllDirectories)
            : [Path.Combine(RepoPaths.Root, d)]).ToArray();
        var used = new HashSet<string>(StringComparer.Ordinal);
        var problems = new List<string>();
        foreach (var doc in docs)
        {
            string text = File.ReadAllText(doc);
            int markers = Regex.Matches(text, "<!-- snippet:").Count;
            var matches = Marker().Matches(text);
            if (markers != matches.Count) problems.Add($"{doc}: a snippet marker is not followed by a ```csharp block");
            foreach (Match m in matches)
            {
                string file = m.Groups["file"].Value;
                string path = Path.Combine(RepoPaths.Root, file);
                used.Add(Path.GetFullPath(path));
                if (!File.Exists(path)) { problems.Add($"{doc}: {file} does not exist"); continue; }
                if (File.ReadAllText(path).ReplaceLineEndings("\n") != m.Groups["code"].Value.ReplaceLineEndings("\n"))
                    problems.Add($"{doc}: the block after 'snippet: {file}' differs from the file; paste the file verbatim");
            }
        }
        foreach (var file in Directory.GetFiles(Path.Combine(RepoPaths.Root, "docs", "snippets"), "*.cs"))
            if (!used.Contains(Path.GetFullPath(file))) problems.Add($"{file} is shown in no document");
        Assert.True(problems.Count == 0, string.Join("\n", problems));
        Assert.True(used.Count >= 5);
    }

    [Fact]
    public void LoadAndGenerateRunsOnASavedModel()
    {
        var config = TinyConfig("""{"name": "rectify", "k": 1, "capacity_factor": 1.5}""");
        var model = MoeMixtral.Create(config, new Rng(7));
        string dir = Path.Combine(Path.GetTempPath(), "puremoe-snippet-" + Guid.NewGuid().ToString("N"));
        try
        {
            MoeMixtral.Save(model, dir);
            string text = global::LoadAndGenerate.Run(dir, "1+2=");
            model.Eval();
            Assert.Equal(TextGeneration.Generate(model, "1+2=", maxNewTokens: 24), text);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Theory]
    [InlineData("topk")]
    [InlineData("rectify")]
    [InlineData("relu")]
    [InlineData("c2r")]
    public void MoeInYourModuleRunsEachRouterForwardAndBackward(string router)
    {
        var rng = new Rng(3);
        var block = new global::MyMoeBlock(16, global::MyMoeBlock.Router(router), rng);
        var x = Tensor.Randn(new Shape(2, 5, 16), rng);
        var y = block.Forward(x);
        Assert.Equal(x.Shape, y.Shape);
        Assert.Equal(10, block.LastStats!.Tokens);
        y.Square().Mean().Backward();
        Assert.Contains(block.NamedParameters(), p => p.Name == "moe.experts.0.w1.weight");
        Assert.All(block.Parameters(), p => Assert.NotNull(p.Grad));
    }

    [Theory]
    [InlineData("""{"name": "topk", "k": 2}""")]
    [InlineData("""{"name": "rectify", "k": 1, "capacity_factor": 1.0}""")]
    [InlineData("""{"name": "relu", "k": 2}""")]
    public void TrainWithAdamWLowersTheLoss(string router)
    {
        var (first, last) = global::TrainWithAdamW.Run("abcabcabcabcabcabcabcabc", steps: 12, router);
        Assert.InRange(first, 4.5, 6.5);                           // ≈ ln 256 at random init
        Assert.True(last < first - 1.0, $"loss {first} -> {last}");
    }

    [Fact]
    public void AutogradBasicsGivesTheGradient()
    {
        var grad = global::AutogradBasics.Run();
        Assert.Equal(16, grad.Length);
        Assert.Contains(grad, g => g != 0);
    }

    internal static MixtralConfig TinyConfig(string routerJson) => new()
    {
        VocabSize = 256, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 1, NumAttentionHeads = 2,
        NumKeyValueHeads = 1, NumLocalExperts = 4, NumExpertsPerTok = 2, RouterJson = routerJson,
    };
}

public sealed class RoutingPlanTourTests
{
    [Theory]
    [InlineData("topk")]
    [InlineData("rectify")]
    [InlineData("relu")]
    [InlineData("c2r")]
    public void TheTourShowsAConsistentPlanAndLayout(string name)
    {
        var (experts, dropped, groups, rowToken) = global::RoutingPlanTour.Run(global::MyMoeBlock.Router(name));
        int kept = experts.Where((e, i) => e >= 0 && !dropped[i]).Count();
        Assert.Equal(kept, groups.Sum());
        Assert.Equal(kept, rowToken.Length);
        int row = 0;
        for (int e = 0; e < 4; e++)                                      // expert-major, token order within
            for (int i = 0; i < groups[e]; i++, row++)
                if (i > 0) Assert.True(rowToken[row] > rowToken[row - 1]);
    }
}

/// <summary>
/// The snippet that runs on an ILGPU device. It shares Device.IlgpuCpu with the ILGPU tests, so it joins their
/// collection: a device is used from one thread at a time, and tests there count the device pool's bytes.
/// </summary>
[Collection("Ilgpu")]
public sealed class DeviceSnippetTests
{
    [Fact]
    public void DevicesAndScopesRunsOnEveryLocalDevice()
    {
        var expected = global::DevicesAndScopes.Run(Device.Cpu);
        Assert.Equal(8, expected.Length);
        Assert.Contains(global::DevicesAndScopes.Pick().Kind, new[] { DeviceKind.Cpu, DeviceKind.Cuda });
        var ilgpu = global::DevicesAndScopes.Run(Device.IlgpuCpu);
        for (int i = 0; i < 8; i++) Assert.Equal(expected[i], ilgpu[i], 1e-3f * (1 + Math.Abs(expected[i])));
    }
}
