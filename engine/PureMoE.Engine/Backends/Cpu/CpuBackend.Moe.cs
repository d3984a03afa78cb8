using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace PureMoE.Backends.Cpu;

// Fused MoE kernels. All are split over independent elements or rows only (never a sum), at cut points that are
// multiples of the vector width, so results do not depend on the thread count.
public partial class CpuBackend
{
    private const int MoeElementGrain = 4096;

    /// <inheritdoc />
    public override void SwiGlu(Storage gate, Storage up, Storage y, int n)
    {
        if (gate.DType != DType.Float32 || !Vector256.IsHardwareAccelerated) { base.SwiGlu(gate, up, y, n); return; }
        float[] g = A<float>(gate), u = A<float>(up), o = A<float>(y);
        Par.For(n, 8, (s, e) => SwiGluF(g, u, o, s, e), MoeElementGrain);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SwiGluF(float[] g, float[] u, float[] y, int start, int end)
    {
        ref float pg = ref MemoryMarshal.GetArrayDataReference(g);
        ref float pu = ref MemoryMarshal.GetArrayDataReference(u);
        ref float py = ref MemoryMarshal.GetArrayDataReference(y);
        var one = Vector256<float>.One;
        int i = start;
        for (; i <= end - 8; i += 8)
        {
            var x = Vector256.LoadUnsafe(ref pg, (nuint)i);
            var r = x / (one + Vector256.Exp(-x)) * Vector256.LoadUnsafe(ref pu, (nuint)i);
            r.StoreUnsafe(ref py, (nuint)i);
        }
        for (; i < end; i++) y[i] = g[i] / (1 + MathF.Exp(-g[i])) * u[i];
    }

    /// <inheritdoc />
    public override void SwiGluBackward(Storage gate, Storage up, Storage dy, Storage dGate, Storage dUp, int n)
    {
        if (gate.DType != DType.Float32 || !Vector256.IsHardwareAccelerated) { base.SwiGluBackward(gate, up, dy, dGate, dUp, n); return; }
        float[] g = A<float>(gate), u = A<float>(up), d = A<float>(dy), dg = A<float>(dGate), du = A<float>(dUp);
        Par.For(n, 8, (s, e) => SwiGluBackwardF(g, u, d, dg, du, s, e), MoeElementGrain);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SwiGluBackwardF(float[] g, float[] u, float[] dy, float[] dg, float[] du, int start, int end)
    {
        ref float pg = ref MemoryMarshal.GetArrayDataReference(g);
        ref float pu = ref MemoryMarshal.GetArrayDataReference(u);
        ref float pd = ref MemoryMarshal.GetArrayDataReference(dy);
        ref float pdg = ref MemoryMarshal.GetArrayDataReference(dg);
        ref float pdu = ref MemoryMarshal.GetArrayDataReference(du);
        var one = Vector256<float>.One;
        int i = start;
        for (; i <= end - 8; i += 8)
        {
            var x = Vector256.LoadUnsafe(ref pg, (nuint)i);
            var d = Vector256.LoadUnsafe(ref pd, (nuint)i);
            var s = one / (one + Vector256.Exp(-x));
            var gradGate = d * Vector256.LoadUnsafe(ref pu, (nuint)i) * (s * (one + x * (one - s)));
            var gradUp = d * (x * s);
            gradGate.StoreUnsafe(ref pdg, (nuint)i);
            gradUp.StoreUnsafe(ref pdu, (nuint)i);
        }
        for (; i < end; i++)
        {
            float x = g[i], s = 1 / (1 + MathF.Exp(-x)), d = dy[i];
            float gradGate = d * u[i] * (s * (1 + x * (1 - s)));
            du[i] = d * (x * s);
            dg[i] = gradGate;
        }
    }

    /// <inheritdoc />
    public override void WeightedGatherSum(Storage rows, Storage index, Storage w, Storage output, int tokens, int m, int d, int rowCount)
    {
        if (rows.DType != DType.Float32) { base.WeightedGatherSum(rows, index, w, output, tokens, m, d, rowCount); return; }
        float[] r = A<float>(rows), wv = A<float>(w), o = A<float>(output);
        long[] ix = A<long>(index);
        for (int i = 0; i < tokens * m; i++)
            if (ix[i] >= 0) CheckIndex(ix[i], rowCount, "WeightedGatherSum");
        Par.For(tokens, (long)m * d, (t0, t1) =>
        {
            for (int t = t0; t < t1; t++)
            {
                Span<float> dst = o.AsSpan(t * d, d);
                bool first = true;
                for (int j = 0; j < m; j++)
                {
                    long row = ix[t * m + j];
                    if (row < 0) continue;
                    ReadOnlySpan<float> src = r.AsSpan((int)row * d, d);
                    // Same rounding as the reference: w·x, then added in j order.
                    if (first) TensorPrimitives.Multiply(src, wv[t * m + j], dst);
                    else TensorPrimitives.MultiplyAdd(src, wv[t * m + j], dst, dst);
                    first = false;
                }
                if (first) dst.Clear();
            }
        });
    }

    /// <inheritdoc />
    public override void WeightedGatherSumBackward(Storage rows, Storage index, Storage w, Storage dOut, Storage? dRows, Storage? dW,
        int tokens, int m, int d, int rowCount)
    {
        if (rows.DType != DType.Float32) { base.WeightedGatherSumBackward(rows, index, w, dOut, dRows, dW, tokens, m, d, rowCount); return; }
        float[] r = A<float>(rows), wv = A<float>(w), g = A<float>(dOut);
        float[]? dr = dRows is null ? null : A<float>(dRows), dw = dW is null ? null : A<float>(dW);
        long[] ix = A<long>(index);
        var read = new bool[rowCount];
        for (int i = 0; i < tokens * m; i++)
        {
            if (ix[i] < 0) continue;
            int row = CheckIndex(ix[i], rowCount, "WeightedGatherSum");
            if (read[row]) throw new ArgumentException($"WeightedGatherSum: row {row} is read by more than one pair");
            read[row] = true;
        }
        Par.For(tokens, (long)m * d, (t0, t1) =>
        {
            for (int t = t0; t < t1; t++)
            {
                ReadOnlySpan<float> gt = g.AsSpan(t * d, d);
                for (int j = 0; j < m; j++)
                {
                    long row = ix[t * m + j];
                    if (row < 0)
                    {
                        if (dw is not null) dw[t * m + j] = 0;
                        continue;
                    }
                    if (dr is not null) TensorPrimitives.Multiply(gt, wv[t * m + j], dr.AsSpan((int)row * d, d));
                    if (dw is not null) dw[t * m + j] = Simd.Dot(gt, r.AsSpan((int)row * d, d));
                }
            }
        });
        if (dr is not null)
        {
            Par.For(rowCount, d, (r0, r1) =>
            {
                for (int row = r0; row < r1; row++)
                    if (!read[row]) dr.AsSpan(row * d, d).Clear();
            });
        }
    }
}
