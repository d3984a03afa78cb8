using PureMoE;
using PureMoE.Backends.Ilgpu;

public static class DevicesAndScopes
{
    // The first CUDA GPU if there is one, else the CPU (SIMD kernels, the default device).
    public static Device Pick() => IlgpuDevices.CudaCount > 0 ? Device.Cuda(0) : Device.Cpu;

    public static float[] Run(Device device)
    {
        var w = Tensor.Randn(new Shape(64, 64), new Rng(1), device: device);
        using var scope = DeviceScope.Begin();                   // owns device buffers made from here on
        var x = Tensor.Randn(new Shape(8, 64), new Rng(2)).To(device);
        var y = scope.Keep(x.MatMul(w).Relu().Sum(1));           // keep the result, free the intermediates
        return y.ToFloatArray();                                 // copied to the host
    }   // scope.Dispose(): x and x·w go back to the device's memory pool (no-op for host tensors)
}
