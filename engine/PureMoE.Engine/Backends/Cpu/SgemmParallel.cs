namespace PureMoE.Backends.Cpu;

public static partial class Sgemm
{
    /// <summary>Row slabs share one packed B panel (true) or each pack their own copy (false: the earlier design; a knob for benchmarks and tests).</summary>
    internal static bool ShareBPanel = true;

    /// <summary>
    /// The parallel product split into <paramref name="chunks"/> slabs of rows, all sharing one packed panel of op(B):
    /// for each KC×NC panel, the threads first pack it together (each a run of whole Nr-column micro-panels), then
    /// each multiplies its own rows by it. A worker that packed its own copy, as before, packed all of B once per
    /// thread: for 2048³ on 2 threads that was 2 × 4 MiB per k-slice, against 4 MiB now.
    /// </summary>
    /// <remarks>
    /// Two Parallel.For phases per panel instead of one loop with a barrier inside: Parallel.For does not promise that
    /// its iterations run at the same time (with one free pool thread they run one after another), so a barrier
    /// between them could wait forever. Each C element is still computed by one thread, over k in the same order, so
    /// the bits are those of the serial product.
    /// </remarks>
    private static unsafe void MultiplyRowSlabsSharingB(in Problem g, int chunks)
    {
        Problem local = g;
        int tiles = (g.M + Mr - 1) / Mr;
        int kcMax = Math.Min(Kc, g.K), ncMax = RoundUp(Math.Min(Nc, g.N), Nr);
        // The panel lives in the calling thread's B buffer: workers only ever touch their own A and tile buffers.
        float[] panel = PackBuffers.ForCurrentThread(0, kcMax * ncMax).B;
        nint bRow = g.TransB ? 1 : g.Ldb, bCol = g.TransB ? g.Ldb : 1;
        for (int jc = 0; jc < g.N; jc += Nc)
        {
            int nc = Math.Min(Nc, g.N - jc);
            int panels = (nc + Nr - 1) / Nr, packers = Math.Min(chunks, panels);
            for (int pc = 0; pc < g.K; pc += Kc)
            {
                int kc = Math.Min(Kc, g.K - pc), jcNow = jc, pcNow = pc;
                Parallel.For(0, packers, t =>
                {
                    int first = (int)((long)panels * t / packers) * Nr;
                    int end = Math.Min(nc, (int)((long)panels * (t + 1) / packers) * Nr);
                    fixed (float* bBase = local.B, panelRaw = panel)
                    {
                        float* src = bBase + local.BOffset + pcNow * bRow + (jcNow + first) * bCol;
                        PackB(src, bRow, bCol, kc, end - first, Align64(panelRaw) + (nint)first * kc);
                    }
                });
                Parallel.For(0, chunks, t =>
                {
                    int start = (int)((long)tiles * t / chunks) * Mr;
                    int end = Math.Min(local.M, (int)((long)tiles * (t + 1) / chunks) * Mr);
                    fixed (float* panelRaw = panel)
                    {
                        MultiplyRowsByPanel(in local, start, end, jcNow, nc, pcNow, kc, Align64(panelRaw));
                    }
                });
            }
        }
    }
}
