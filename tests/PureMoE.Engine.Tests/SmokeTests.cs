namespace PureMoE.Engine.Tests;

public class SmokeTests
{
    [Fact]
    public void EngineAssemblyLoads() => Assert.Equal("PureMoE.Engine", typeof(PureMoE.Engine.AssemblyMarker).Assembly.GetName().Name);
}
