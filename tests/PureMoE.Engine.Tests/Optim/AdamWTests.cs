using PureMoE.IO;
using PureMoE.Optim;

namespace PureMoE.Engine.Tests.Optim;

public class AdamWTests
{
    /// <summary>torch.optim.AdamW's update, written out in float64 exactly as its documentation states it.</summary>
    private sealed class ReferenceAdamW(double lr, double b1, double b2, double eps, double wd)
    {
        private double[]? _m, _v;
        private int _t;

        public void Step(double[] p, double[] g)
        {
            _m ??= new double[p.Length];
            _v ??= new double[p.Length];
            _t++;
            for (int i = 0; i < p.Length; i++)
            {
                p[i] -= lr * wd * p[i];
                _m[i] = b1 * _m[i] + (1 - b1) * g[i];
                _v[i] = b2 * _v[i] + (1 - b2) * g[i] * g[i];
                double mHat = _m[i] / (1 - Math.Pow(b1, _t));
                double vHat = _v[i] / (1 - Math.Pow(b2, _t));
                p[i] -= lr * mHat / (Math.Sqrt(vHat) + eps);
            }
        }
    }

    private static double[] GradientOf(Tensor p, double[] target)
    {
        // loss = Σ (p − target)² · (i+1): gradients of different sizes per entry.
        p.ZeroGrad();
        var weights = Tensor.FromArray(Enumerable.Range(1, target.Length).Select(i => (double)i).ToArray(), target.Length);
        p.Sub(Tensor.FromArray(target, target.Length)).Square().Mul(weights).Sum().Backward();
        return p.Grad!.ToDoubleArray();
    }

    [Theory]
    [InlineData(DeviceKind.Cpu)]
    [InlineData(DeviceKind.CpuReference)]
    public void MatchesTorchFormulasInFloat64(DeviceKind kind)
    {
        var device = kind == DeviceKind.Cpu ? Device.Cpu : Device.CpuReference;
        double[] start = [0.5, -1.5, 2.0, 0.0, 3.0], target = [1, 1, -1, 0.5, 0];
        var p = Tensor.FromArray((double[])start.Clone(), 5).To(device);
        p.RequiresGrad = true;
        var opt = new AdamW([p], lr: 0.05, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1);
        var reference = new ReferenceAdamW(0.05, 0.9, 0.95, 1e-8, 0.1);
        var expected = (double[])start.Clone();
        for (int step = 0; step < 6; step++)
        {
            var pc = Tensor.FromArray((double[])expected.Clone(), 5);
            pc.RequiresGrad = true;
            reference.Step(expected, GradientOf(pc, target));
            p.ZeroGrad();
            var weights = Tensor.FromArray(Enumerable.Range(1, 5).Select(i => (double)i).ToArray(), 5).To(device);
            p.Sub(Tensor.FromArray(target, 5).To(device)).Square().Mul(weights).Sum().Backward();
            opt.Step();
            var actual = p.ToDoubleArray();
            for (int i = 0; i < 5; i++) Assert.Equal(expected[i], actual[i], 12);
        }
        Assert.Equal(6, opt.StepCount);
    }

    [Fact]
    public void Float32StepsTrackFloat64Reference()
    {
        double[] start = [0.5, -1.5, 2.0], g = [0.1, -2.0, 3e-4];
        var p = Tensor.FromArray(start.Select(v => (float)v).ToArray(), 3);
        p.RequiresGrad = true;
        var opt = new AdamW([p], lr: 0.01, weightDecay: 0.01);
        var reference = new ReferenceAdamW(0.01, 0.9, 0.999, 1e-8, 0.01);
        var expected = (double[])start.Clone();
        for (int step = 0; step < 3; step++)
        {
            p.Grad = Tensor.FromArray(g.Select(v => (float)v).ToArray(), 3);
            opt.Step();
            reference.Step(expected, g);
        }
        var actual = p.ToDoubleArray();
        for (int i = 0; i < 3; i++) Assert.Equal(expected[i], actual[i], 5);
    }

    [Fact]
    public void ParametersWithoutGradientAreSkipped()
    {
        var a = Tensor.FromArray(new float[] { 1, 2 }, 2);
        var b = Tensor.FromArray(new float[] { 3, 4 }, 2);
        a.RequiresGrad = b.RequiresGrad = true;
        var opt = new AdamW([a, b], lr: 0.1);
        a.Grad = Tensor.FromArray(new float[] { 1, 1 }, 2);
        opt.Step();
        Assert.Equal(new float[] { 3, 4 }, b.ToFloatArray());
        Assert.NotEqual(new float[] { 1, 2 }, a.ToFloatArray());
        Assert.Equal(["0.step", "0.exp_avg", "0.exp_avg_sq"], opt.StateDict().Keys);
    }

    [Fact]
    public void StateDictRoundTripResumesIdentically()
    {
        Tensor Param(string name)
        {
            var t = Tensor.FromArray(new float[] { 0.3f, -0.7f, 1.1f, 2f }, 2, 2);
            t.RequiresGrad = true;
            t.Name = name;
            return t;
        }
        var grads = Enumerable.Range(0, 6).Select(s => Tensor.FromArray(new float[] { s, -1, 0.5f * s, 2 }, 2, 2)).ToArray();

        // Uninterrupted run.
        var p1 = Param("w");
        var o1 = new AdamW([p1], lr: 0.02, weightDecay: 0.1);
        foreach (var g in grads) { p1.Grad = g; o1.Step(); }

        // Three steps, checkpoint, a fresh optimizer resumes from the checkpoint.
        var p2 = Param("w");
        var o2 = new AdamW([p2], lr: 0.02, weightDecay: 0.1);
        foreach (var g in grads[..3]) { p2.Grad = g; o2.Step(); }
        var state = o2.StateDict();
        Assert.Equal(["w.step", "w.exp_avg", "w.exp_avg_sq"], state.Keys);
        Assert.Equal(3, state["w.step"].Item());
        var o3 = new AdamW([p2], lr: 0.02, weightDecay: 0.1);
        o3.LoadStateDict(state);
        foreach (var g in grads[3..]) { p2.Grad = g; o3.Step(); }

        Assert.Equal(p1.ToFloatArray(), p2.ToFloatArray());
        Assert.Equal(6, o3.StepCount);
    }

    [Fact]
    public void LoadStateDictFromAFileResumesIdenticallyAndChecksBeforeReading()
    {
        // A float32 matrix and a float64 vector, so both of the file's in-place read paths are taken.
        (Tensor W, Tensor B) Params()
        {
            var w = Tensor.FromArray(new float[] { 0.3f, -0.7f, 1.1f, 2f }, 2, 2);
            var b = Tensor.FromArray(new double[] { 0.25, -3, 1e-3 }, 3);
            w.RequiresGrad = b.RequiresGrad = true;
            (w.Name, b.Name) = ("w", "b");
            return (w, b);
        }
        void Steps(AdamW opt, Tensor w, Tensor b, Range steps)
        {
            foreach (int s in Enumerable.Range(0, 6).ToArray()[steps])
            {
                w.Grad = Tensor.FromArray(new float[] { s, -1, 0.5f * s, 2 }, 2, 2);
                b.Grad = Tensor.FromArray(new double[] { -s, 0.1 * s, 3 }, 3);
                opt.Step();
            }
        }
        string path = Path.Combine(Path.GetTempPath(), $"puremoe-adamw-{Guid.NewGuid():N}.safetensors");
        try
        {
            var (w1, b1) = Params();
            var o1 = new AdamW([w1, b1], lr: 0.02, weightDecay: 0.1);
            Steps(o1, w1, b1, ..);

            var (w2, b2) = Params();
            var o2 = new AdamW([w2, b2], lr: 0.02, weightDecay: 0.1);
            Steps(o2, w2, b2, ..3);
            TensorIO.Save(path, o2.StateDict(copy: false));
            var o3 = new AdamW([w2, b2], lr: 0.02, weightDecay: 0.1);
            using (var file = SafetensorsFile.Open(path)) o3.LoadStateDict(file);
            foreach (var (key, saved) in o2.StateDict())
                Assert.Equal(saved.ToDoubleArray(), o3.StateDict()[key].ToDoubleArray());
            Steps(o3, w2, b2, 3..);
            Assert.Equal(w1.ToFloatArray(), w2.ToFloatArray());
            Assert.Equal(b1.ToDoubleArray(), b2.ToDoubleArray());

            // A file that does not fit is rejected from its header, and the optimizer keeps its state.
            var other = Tensor.Zeros(new Shape(3, 2));
            other.RequiresGrad = true;
            other.Name = "w";
            var o4 = new AdamW([other]);
            using (var file = SafetensorsFile.Open(path))
            {
                var ex = Assert.Throws<ArgumentException>(() => o4.LoadStateDict(file));
                Assert.Contains("w.exp_avg: checkpoint [2,2], parameter [3,2]", ex.Message);
                Assert.Contains("unexpected key b.step", ex.Message);
            }
            Assert.Empty(o4.StateDict());
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void LoadStateDictRejectsBadStateWithoutChanges()
    {
        var p = Tensor.FromArray(new float[] { 1, 2 }, 2);
        p.RequiresGrad = true;
        p.Name = "w";
        var opt = new AdamW([p]);
        var bad = new Dictionary<string, Tensor>
        {
            ["w.step"] = Tensor.FromArray([3L], []),
            ["w.exp_avg"] = Tensor.Zeros(new Shape(3)),
            ["w.exp_avg_sq"] = Tensor.Zeros(new Shape(2)),
            ["v.step"] = Tensor.FromArray([1L], []),
        };
        var ex = Assert.Throws<ArgumentException>(() => opt.LoadStateDict(bad));
        Assert.Contains("w.exp_avg: checkpoint [3], parameter [2]", ex.Message);
        Assert.Contains("unexpected key v.step", ex.Message);
        Assert.Empty(opt.StateDict());
    }

    [Fact]
    public void StateDictWithoutCopyIsTheLiveStateAndTheDefaultIsASnapshot()
    {
        var w = Tensor.FromArray(new float[] { 1, 2 }, 2);
        w.RequiresGrad = true;
        var opt = new AdamW([w], lr: 0.1);
        w.Grad = Tensor.FromArray(new float[] { 0.5f, -1 }, 2);
        opt.Step();
        var snapshot = opt.StateDict();
        var live = opt.StateDict(copy: false);
        float[] before = snapshot["0.exp_avg"].ToArray<float>();
        Assert.Equal(before, live["0.exp_avg"].ToArray<float>());
        opt.Step();
        Assert.Equal(before, snapshot["0.exp_avg"].ToArray<float>());
        Assert.NotEqual(before, live["0.exp_avg"].ToArray<float>());
        Assert.Equal(opt.StateDict()["0.exp_avg_sq"].ToArray<float>(), live["0.exp_avg_sq"].ToArray<float>());
    }
}
