using PureMoE;

public static class AutogradBasics
{
    public static float[] Run()
    {
        var x = Tensor.Randn(new Shape(4, 8), new Rng(1));
        var w = Tensor.Randn(new Shape(8, 2), new Rng(2));
        w.RequiresGrad = true;
        var loss = x.MatMul(w).Square().Mean();
        loss.Backward();                                         // w.Grad = d loss / d w, shape [8, 2]
        return w.Grad!.ToFloatArray();
    }
}
