using PureMoE.Moe;
using ScottPlot;

namespace PureMoE.Cli;

/// <summary>The PNG plots of a comparison (ScottPlot).</summary>
public static class ComparePlots
{
    private const int Width = 1000, Height = 600;

    /// <summary>Writes every plot into <paramref name="dir"/>; returns the files written.</summary>
    public static IReadOnlyList<string> Write(IReadOnlyList<CompareRun> runs, string dir, string lossUnit = "nats/byte")
    {
        var files = new List<string>();
        // One seed per configuration in the curves (the first), to keep them readable.
        var first = runs.GroupBy(r => r.Config).Select(g => g.First()).ToList();

        var loss = new Plot();
        foreach (var r in first)
        {
            var ys = Smooth(r.Result.TrainLosses, 10);
            var line = loss.Add.ScatterLine(Enumerable.Range(1, ys.Length).Select(i => (double)i).ToArray(), ys);
            line.LegendText = r.Config.Name;
            line.LineWidth = 2;
        }
        Finish(loss, "Training loss (moving average of 10 steps)", "step", $"loss ({lossUnit})", Path.Combine(dir, "loss.png"), files);

        var valid = new Plot();
        foreach (var r in first)
        {
            var s = valid.Add.ScatterLine(r.Result.ValidLosses.Select(v => (double)v.Step).ToArray(), r.Result.ValidLosses.Select(v => v.Loss).ToArray());
            s.LegendText = r.Config.Name;
            s.LineWidth = 2;
            s.MarkerSize = 6;
        }
        Finish(valid, "Validation loss", "step", $"loss ({lossUnit})", Path.Combine(dir, "valid.png"), files);

        foreach (var r in first)
        {
            var map = LoadMatrix(r.History, out int layers, out int experts);
            if (map is null) continue;
            var plt = new Plot();
            var hm = plt.Add.Heatmap(map);
            hm.FlipVertically = true;   // row 0 at the bottom, so the y axis reads as the row index
            hm.Colormap = new ScottPlot.Colormaps.Viridis();
            plt.Add.ColorBar(hm);
            Finish(plt, $"{r.Config.Name}: expert load share per step (y = {experts + 1}·layer + expert: layer 0 at the bottom; {layers} layers)",
                "step", "layer · expert", Path.Combine(dir, $"load-{r.Config.Name}.png"), files, legend: false);
        }

        var remoe = first.FirstOrDefault(r => r.Config.Router.Name == "relu");
        if (remoe is not null)
        {
            var plt = new Plot();
            var steps = remoe.History.Select(h => (double)h.Step).ToArray();
            var sparsity = remoe.History.Select(h => h.Stats.OfType<RoutingStats>().Select(s => s.Extras.GetValueOrDefault("sparsity", double.NaN)).Average()).ToArray();
            var lambda = remoe.History.Select(h => Math.Log10(h.Stats.OfType<RoutingStats>().Select(s => s.Extras.GetValueOrDefault("lambda", double.NaN)).First())).ToArray();
            var sp = plt.Add.ScatterLine(steps, sparsity);
            sp.LegendText = "sparsity (fraction of zero gates, mean over layers)";
            sp.LineWidth = 2;
            var la = plt.Add.ScatterLine(steps, lambda);
            la.LegendText = "log10 λ (right axis)";
            la.LineWidth = 2;
            la.Axes.YAxis = plt.Axes.Right;
            plt.Axes.Right.Label.Text = "log10 λ";
            Finish(plt, $"ReMoE: sparsity and λ over steps (target sparsity 1 − k/E)", "step", "sparsity", Path.Combine(dir, "remoe.png"), files);
        }

        var co = first.Where(r => r.Config.K >= 2).ToList();
        if (co.Count > 0)
        {
            // Rows: one block per configuration; columns: the layers side by side; NaN gaps between blocks.
            int e = co[0].History[^1].Stats.OfType<RoutingStats>().First().Experts, layers = co[0].History[^1].Stats.Count;
            var m = new double[co.Count * (e + 1) - 1, layers * (e + 1) - 1];
            for (int i = 0; i < m.GetLength(0); i++) for (int j = 0; j < m.GetLength(1); j++) m[i, j] = double.NaN;
            for (int c = 0; c < co.Count; c++)
            {
                var tail = co[c].History.Skip(co[c].History.Count * 3 / 4).ToList();
                for (int l = 0; l < layers; l++)
                {
                    var sum = new double[e * e];
                    foreach (var h in tail)
                        if (h.Stats[l] is RoutingStats s)
                            for (int x = 0; x < e * e; x++) sum[x] += s.CoActivation[x];
                    // Off-diagonal co-activation as a share of each row's pairs; the diagonal (load) is left out.
                    for (int a = 0; a < e; a++)
                    {
                        double row = 0;
                        for (int b = 0; b < e; b++) if (a != b) row += sum[a * e + b];
                        for (int b = 0; b < e; b++)
                            m[c * (e + 1) + a, l * (e + 1) + b] = a == b ? double.NaN : row > 0 ? sum[a * e + b] / row : 0;
                    }
                }
            }
            var plt = new Plot();
            var hm = plt.Add.Heatmap(m);
            hm.FlipVertically = true;
            hm.Colormap = new ScottPlot.Colormaps.Viridis();
            plt.Add.ColorBar(hm);
            Finish(plt, $"Co-activation (row expert → share of its partners), last quarter of steps; blocks bottom to top: {string.Join(", ", co.Select(r => r.Config.Name))}; layers left to right",
                $"{e + 1}·layer + partner expert", $"{e + 1}·config + expert", Path.Combine(dir, "coactivation.png"), files, legend: false);
        }
        return files;
    }

    // [layers · (E + 1) − 1, steps]: each expert's share of its layer's kept pairs at each step; a NaN row between layers.
    private static double[,]? LoadMatrix(IReadOnlyList<StepReport> history, out int layers, out int experts)
    {
        layers = experts = 0;
        if (history.Count == 0 || history[^1].Stats.OfType<RoutingStats>().FirstOrDefault() is not RoutingStats any) return null;
        layers = history[^1].Stats.Count;
        experts = any.Experts;
        var m = new double[layers * (experts + 1) - 1, history.Count];
        for (int t = 0; t < history.Count; t++)
            for (int l = 0; l < layers; l++)
            {
                if (l > 0) m[l * (experts + 1) - 1, t] = double.NaN;
                var s = history[t].Stats[l];
                double total = s?.ExpertLoad.Sum() ?? 0;
                for (int x = 0; x < experts; x++)
                    m[l * (experts + 1) + x, t] = s is null || total == 0 ? double.NaN : s.ExpertLoad[x] / total;
            }
        return m;
    }

    private static double[] Smooth(IReadOnlyList<double> xs, int window)
    {
        var result = new double[xs.Count];
        double sum = 0;
        for (int i = 0; i < xs.Count; i++)
        {
            sum += xs[i];
            if (i >= window) sum -= xs[i - window];
            result[i] = sum / Math.Min(i + 1, window);
        }
        return result;
    }

    private static void Finish(Plot plt, string title, string x, string y, string path, List<string> files, bool legend = true)
    {
        plt.Title(title, size: 12);
        plt.XLabel(x);
        plt.YLabel(y);
        if (legend) plt.ShowLegend(Alignment.UpperRight);
        plt.SavePng(path, Width, Height);
        files.Add(path);
    }
}
