using System.Reflection;
using ILGPU;

namespace PureMoE.Backends.Ilgpu;

/// <summary>
/// Every kernel entry point of the ILGPU backend, with generic kernels instantiated as the backend uses them:
/// op-struct parameters (IUnaryOp, IBinaryOp, IReduceOp) with every op struct, element-type parameters with
/// float and long. Used to compile all kernels ahead of use (the OpenCL C code-generation test, a GPU warm-up).
/// </summary>
internal static class IlgpuKernelCatalog
{
    /// <summary>One entry point.</summary>
    /// <param name="Name">Readable name, e.g. Unary&lt;ExpOp&gt;.</param>
    /// <param name="Method">The closed kernel method.</param>
    /// <param name="ImplicitlyGrouped">True for kernels indexed by an Index1D (auto-grouped), false for explicitly grouped ones.</param>
    internal readonly record struct Entry(string Name, MethodInfo Method, bool ImplicitlyGrouped)
    {
        /// <summary>The entry point as an ILGPU backend compiles it (no accelerator needed).</summary>
        public ILGPU.Backends.EntryPoints.EntryPointDescription Description => ImplicitlyGrouped
            ? ILGPU.Backends.EntryPoints.EntryPointDescription.FromImplicitlyGroupedKernel(Method)
            : ILGPU.Backends.EntryPoints.EntryPointDescription.FromExplicitlyGroupedKernel(Method);
    }

    /// <summary>All entry points.</summary>
    public static IReadOnlyList<Entry> All()
    {
        var structs = typeof(IlgpuKernels).Assembly.GetTypes().Where(t => t.IsValueType && !t.IsGenericTypeDefinition).ToArray();
        var result = new List<Entry>();
        foreach (var m in typeof(IlgpuKernels).GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static))
        {
            if (m.GetCustomAttribute<IlgpuKernelAttribute>() is null) continue;
            foreach (var closed in Instantiations(m, structs))
            {
                bool implicitIndex = closed.GetParameters() is [{ ParameterType: var p0 }, ..] && p0 == typeof(Index1D);
                string name = closed.IsGenericMethod
                    ? $"{m.Name}<{string.Join(",", closed.GetGenericArguments().Select(a => a.Name))}>"
                    : m.Name;
                result.Add(new Entry(name, closed, implicitIndex));
            }
        }
        return result;
    }

    private static IEnumerable<MethodInfo> Instantiations(MethodInfo m, Type[] structs)
    {
        if (!m.IsGenericMethodDefinition)
        {
            yield return m;
            yield break;
        }
        var args = m.GetGenericArguments();
        var choices = args.Select(a =>
        {
            var ifaces = a.GetGenericParameterConstraints().Where(c => c.IsInterface).ToArray();
            return ifaces.Length == 0
                ? new[] { typeof(float), typeof(long) }
                : structs.Where(s => ifaces.All(i => i.IsAssignableFrom(s))).ToArray();
        }).ToArray();
        IEnumerable<Type[]> combos = [[]];
        foreach (var c in choices) combos = combos.SelectMany(prefix => c.Select(t => prefix.Append(t).ToArray()));
        foreach (var combo in combos) yield return m.MakeGenericMethod(combo);
    }
}
