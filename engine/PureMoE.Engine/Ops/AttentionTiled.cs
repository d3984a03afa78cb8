using PureMoE.Backends;
using PureMoE.Backends.Cpu;

namespace PureMoE;

// Causal attention tile by tile on the CPU (Backends/Cpu/FlashAttention.cs): the op around the kernels, forward and
// backward together. Kept for the backward: the output, one log-sum-exp per query row, the scaled queries and K
// transposed (each O(S·D)).
public sealed partial class Tensor
{
    /// <summary>
    /// From this many queries <see cref="CausalAttention(Tensor, Tensor, Tensor)"/> runs tile by tile on
    /// <see cref="Device.Cpu"/> (float32, head dimension a multiple of 8), never holding the [S, Sk] scores. Below it the
    /// block-causal products were as fast or faster with the JIT's tiering off (as `puremoe` runs; S = 64 to 256), and
    /// their score matrices are small; from 512 the tiles took a third less time or better (bench/RESULTS.md, "Tiles").
    /// </summary>
    internal const int TiledAttentionMinQueries = 512;

    // The tiled kernels run on the SIMD CPU backend in float32 (not on the reference backend, the tests' oracle).
    private static bool CanTile(Tensor q, int d) =>
        q.Backend is CpuBackend && q.DType == DType.Float32 && q.Numel > 0 && FlashAttention.Supported(d);

    // softmax(scale·Q·Kᵀ, causal)·V on folded heads (qg [B, Hkv, group·S, D], k and v [B, Hkv, Sk, D]), as
    // CausalAttentionFolded computes it, without the scores.
    private static Tensor CausalAttentionTiled(Tensor qg, Tensor k, Tensor v, int s, double scale)
    {
        int b = qg.Shape[0], hkv = qg.Shape[1], rows = qg.Shape[2], d = qg.Shape[3], sk = k.Shape[2];
        int bh = b * hkv;
        var (dtype, device) = (qg.DType, qg.Device);
        // The queries times 1/√D, so that no tile scales its scores: a copy of ours is scaled in place.
        var q = qg.Dense();
        var qs = ReferenceEquals(q.Storage, qg.Storage) ? Empty(qg.Shape, dtype, device) : q;
        qg.Backend.Unary(UnaryOp.MulScalar, q.Storage, 0, qs.Storage, 0, q.Numel, scale);
        var kd = HeadRows(k, bh, sk, d);
        var vd = HeadRows(v, bh, sk, d);
        var problem = new FlashAttention.Problem(bh, rows, s, sk, d, Host(qs.Storage),
            Host(kd.Storage), kd.Offset, kd.HeadStride, Host(vd.Storage), vd.Offset, vd.HeadStride);
        var y = Empty(qg.Shape, dtype, device);
        var lse = Empty(new Shape(bh, rows), dtype, device);
        var kT = Empty(new Shape(problem.TransposedLength), dtype, device);
        FlashAttention.Transpose(problem, problem.K, problem.KOffset, problem.KHeadStride, Host(kT.Storage));
        FlashAttention.Forward(problem, Host(kT.Storage), Host(y.Storage), Host(lse.Storage));

        return Record("CausalAttention", y, [qg, k, v], g =>
        {
            var dy = g.Dense();
            var dq = qg.RequiresGrad ? Empty(qg.Shape, dtype, device) : null;
            var dk = k.RequiresGrad ? Empty(k.Shape, dtype, device) : null;
            var dv = v.RequiresGrad ? Empty(v.Shape, dtype, device) : null;
            var vT = Empty(kT.Shape, dtype, device);
            FlashAttention.Transpose(problem, problem.V, problem.VOffset, problem.VHeadStride, Host(vT.Storage));
            var slotsK = Empty(new Shape(problem.SlotsLength), dtype, device);
            var slotsV = Empty(slotsK.Shape, dtype, device);
            FlashAttention.Backward(problem, Host(kT.Storage), Host(vT.Storage), Host(y.Storage), Host(lse.Storage), Host(dy.Storage),
                dq is null ? null : Host(dq.Storage), dk is null ? null : Host(dk.Storage), dv is null ? null : Host(dv.Storage),
                Host(slotsK.Storage), Host(slotsV.Storage));
            // The kernels give the scaled queries' gradient; the queries' own is scale times it.
            if (dq is not null) g.Backend.Unary(UnaryOp.MulScalar, dq.Storage, 0, dq.Storage, 0, dq.Numel, scale);
            vT.Recycle();
            slotsK.Recycle();
            slotsV.Recycle();
            return [dq?.AsFreshGradient(), dk?.AsFreshGradient(), dv?.AsFreshGradient()];
        }, saved: [lse, kT, qs]);

        static float[] Host(Storage storage) => ((CpuStorage)storage).As<float>();
    }
}
