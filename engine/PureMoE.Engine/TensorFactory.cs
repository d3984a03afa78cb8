using PureMoE.Backends;

namespace PureMoE;

public sealed partial class Tensor
{
    private static Device Or(Device? device) => device ?? Device.Cpu;

    /// <summary>A new contiguous tensor of zeros.</summary>
    public static Tensor Zeros(Shape shape, DType dtype = DType.Float32, Device? device = null)
    {
        Device d = Or(device);
        CheckDeviceDType(d, dtype);
        return new Tensor(d.Backend.Allocate(dtype, shape.Numel), shape, d);
    }

    /// <summary>
    /// A new contiguous tensor whose contents are unspecified, for outputs a kernel writes entirely: no zero fill
    /// (on ILGPU devices the buffer comes from the pool holding whatever it last held).
    /// </summary>
    internal static Tensor Empty(Shape shape, DType dtype, Device device)
    {
        CheckDeviceDType(device, dtype);
        var storage = device.IsHost
            ? CpuStorage.AllocateUninitialized(dtype, shape.Numel)
            : device.Backend.AllocateUninitialized(dtype, shape.Numel);
        return new Tensor(storage, shape, device);
    }

    /// <summary>A new tensor filled with <paramref name="value"/>.</summary>
    public static Tensor Full(Shape shape, double value, DType dtype = DType.Float32, Device? device = null)
    {
        if (value == 0) return Zeros(shape, dtype, device);
        // Fill writes every element: no zero fill first (one launch, not two, on a GPU).
        var t = Empty(shape, dtype, Or(device));
        t.Backend.Fill(t.Storage, 0, t.Numel, value);
        return t;
    }

    /// <summary>A new tensor of ones.</summary>
    public static Tensor Ones(Shape shape, DType dtype = DType.Float32, Device? device = null) => Full(shape, 1, dtype, device);

    /// <summary>Zeros with the shape, dtype and device of <paramref name="t"/>.</summary>
    public static Tensor ZerosLike(Tensor t) => Zeros(t.Shape, t.DType, t.Device);

    /// <summary>Ones with the shape, dtype and device of <paramref name="t"/>.</summary>
    public static Tensor OnesLike(Tensor t) => Ones(t.Shape, t.DType, t.Device);

    /// <summary>A 0-d tensor holding one value.</summary>
    public static Tensor Scalar(double value, DType dtype = DType.Float32, Device? device = null) => Full(new Shape(), value, dtype, device);

    /// <summary>A float32 tensor from data (copied) and a shape; the shape defaults to [data.Length].</summary>
    public static Tensor FromArray(float[] data, params int[] shape) => FromHost(data, shape, null);

    /// <summary>A float64 tensor from data (copied) and a shape.</summary>
    public static Tensor FromArray(double[] data, params int[] shape) => FromHost(data, shape, null);

    /// <summary>An int64 tensor from data (copied) and a shape.</summary>
    public static Tensor FromArray(long[] data, params int[] shape) => FromHost(data, shape, null);

    /// <summary>A tensor on <paramref name="device"/> from a host array (float[], double[] or long[]), copied.</summary>
    public static Tensor FromHost(Array data, int[] shape, Device? device)
    {
        Shape s = shape.Length == 0 && data.Length != 1 ? new Shape(data.Length) : new Shape(shape);
        if (s.Numel != data.Length)
            throw new ArgumentException($"FromArray: {data.Length} elements do not fill shape {s} ({s.Numel} elements)");
        Device d = Or(device);
        var storage = d.Backend.Upload(data);
        CheckDeviceDType(d, storage.DType);
        return new Tensor(storage, s, d);
    }

    /// <summary>0, 1, …, n−1 as int64 (or another dtype).</summary>
    public static Tensor Arange(int n, DType dtype = DType.Int64, Device? device = null)
    {
        var data = new long[n];
        for (int i = 0; i < n; i++) data[i] = i;
        var t = FromHost(data, [n], device);
        return dtype == DType.Int64 ? t : t.To(dtype);
    }

    /// <summary>
    /// Normal(0, std²) samples from a seeded generator (deterministic). Inside <see cref="Nn.RandomInit.Skip"/> the
    /// contents are unspecified and nothing is drawn.
    /// </summary>
    public static Tensor Randn(Shape shape, Rng rng, double std = 1.0, DType dtype = DType.Float32, Device? device = null)
    {
        if (Nn.RandomInit.IsSkipped) return Empty(shape, dtype, Or(device));
        int n = shape.Numel;
        if (dtype == DType.Float64)
        {
            var d = GC.AllocateUninitializedArray<double>(n);
            rng.FillGaussian(d, std);   // = rng.NextGaussian() * std for each element in turn
            return FromHost(d, shape.ToArray(), device);
        }
        var f = GC.AllocateUninitializedArray<float>(n);
        rng.FillGaussian(f, std);       // = (float)(rng.NextGaussian() * std) for each element in turn
        return FromHost(f, shape.ToArray(), device);
    }

    /// <summary>
    /// Uniform samples in [low, high) from a seeded generator (deterministic). Inside
    /// <see cref="Nn.RandomInit.Skip"/> the contents are unspecified and nothing is drawn.
    /// </summary>
    public static Tensor Uniform(Shape shape, Rng rng, double low = 0, double high = 1, DType dtype = DType.Float32, Device? device = null)
    {
        if (Nn.RandomInit.IsSkipped) return Empty(shape, dtype, Or(device));
        int n = shape.Numel;
        if (dtype == DType.Float64)
        {
            var d = new double[n];
            for (int i = 0; i < n; i++) d[i] = low + (high - low) * rng.NextDouble();
            return FromHost(d, shape.ToArray(), device);
        }
        var f = new float[n];
        for (int i = 0; i < n; i++) f[i] = (float)(low + (high - low) * rng.NextDouble());
        return FromHost(f, shape.ToArray(), device);
    }

    private static void CheckDeviceDType(Device d, DType dtype)
    {
        if (dtype == DType.Float64 && !d.IsHost)
            throw new NotSupportedException($"float64 tensors live on the CPU only, not on {d}");
    }

    // ---------------------------------------------------------------- reading out

    /// <summary>The elements in row-major order as a new host array of T (float, double or long; must match the dtype).</summary>
    public T[] ToArray<T>()
    {
        var want = typeof(T) == typeof(float) ? DType.Float32 : typeof(T) == typeof(double) ? DType.Float64
            : typeof(T) == typeof(long) ? DType.Int64 : throw new NotSupportedException($"ToArray: element type {typeof(T).Name}");
        if (want != DType)
            throw new InvalidOperationException($"ToArray<{typeof(T).Name}>: tensor is {DType.Name()}; convert with To(DType) first");
        var c = Contiguous();
        var result = new T[Numel];
        c.Backend.Download(c.Storage, c.Offset, result, Numel);
        return result;
    }

    /// <summary>The elements as float[] (converting from any dtype).</summary>
    public float[] ToFloatArray() => (DType == DType.Float32 ? this : To(DType.Float32)).ToArray<float>();

    /// <summary>The elements as double[] (converting from any dtype).</summary>
    public double[] ToDoubleArray()
    {
        // float64 lives on the host only: bring device tensors over first.
        var host = Device.IsHost ? this : To(Device.Cpu);
        return (host.DType == DType.Float64 ? host : host.To(DType.Float64)).ToArray<double>();
    }

    /// <summary>The elements as long[] (float values truncate).</summary>
    public long[] ToLongArray() => (DType == DType.Int64 ? this : To(DType.Int64)).ToArray<long>();

    /// <summary>The value of a one-element tensor.</summary>
    public double Item()
    {
        if (Numel != 1) throw new InvalidOperationException($"Item: tensor of shape {Shape} has {Numel} elements, not 1");
        return ToDoubleArray()[0];
    }

    // ---------------------------------------------------------------- copies and conversions

    /// <summary>This tensor if already contiguous, else a contiguous copy (differentiable).</summary>
    public Tensor Contiguous() => IsContiguous ? this : Clone();

    /// <summary>
    /// This tensor if contiguous from offset 0 of its storage, else an unrecorded contiguous copy: the form kernels
    /// take. Ops call it on inputs and record the graph against the original tensors.
    /// </summary>
    internal Tensor Dense()
    {
        if (IsContiguous && Offset == 0) return this;
        var y = Empty(Shape, DType, Device);
        Backend.CopyStrided(AsStrided(Shape), Shape, y.Storage, 0);
        return y;
    }

    /// <summary>A contiguous copy with its own storage (differentiable: the gradient passes through).</summary>
    public Tensor Clone()
    {
        var y = Empty(Shape, DType, Device);
        Backend.CopyStrided(AsStrided(Shape), Shape, y.Storage, 0);
        return Record("Clone", y, [this], g => [g]);
    }

    /// <summary>A copy converted to <paramref name="dtype"/> (differentiable between float types).</summary>
    public Tensor To(DType dtype)
    {
        if (dtype == DType) return this;
        var y = Empty(Shape, dtype, Device);
        Backend.CopyStrided(AsStrided(Shape), Shape, y.Storage, 0);
        if (!dtype.IsFloatingPoint()) return y;
        DType from = DType;
        return Record("To", y, [this], g => [g.To(from)]);
    }

    /// <summary>A copy on <paramref name="device"/> (differentiable: the gradient moves back).</summary>
    public Tensor To(Device device)
    {
        if (device.Equals(Device)) return this;
        var c = Contiguous();
        if (device.IsHost && Device.IsHost)
        {
            // Host devices share memory: copy the array, hand it to the other backend.
            var host = Array.CreateInstance(((CpuStorage)c.Storage).Data.GetType().GetElementType()!, Numel);
            c.Backend.Download(c.Storage, c.Offset, host, Numel);
            var moved = new Tensor(new CpuStorage(host), Shape, device);
            Device from = Device;
            return Record("ToDevice", moved, [this], g => [g.To(from)]);
        }
        // Host <-> ILGPU device, or ILGPU device <-> ILGPU device through the host: download, then upload.
        if (DType == DType.Float64 && !device.IsHost)
            throw new NotSupportedException($"To: float64 tensors live on the CPU only, not on {device}; convert with To(DType.Float32) first");
        var staged = Array.CreateInstance(DType switch
        {
            DType.Float32 => typeof(float),
            DType.Float64 => typeof(double),
            _ => typeof(long),
        }, Numel);
        c.Backend.Download(c.Storage, c.Offset, staged, Numel);
        var target = new Tensor(device.IsHost ? new CpuStorage(staged) : device.Backend.Upload(staged), Shape, device);
        Device source = Device;
        return Record("ToDevice", target, [this], g => [g.To(source)]);
    }

    /// <summary>this += other (same shape, or broadcast into this shape). Not recorded: for gradient buffers and optimizers.</summary>
    internal void AddInPlace(Tensor other)
    {
        if (!IsContiguous || Offset != 0) throw new InvalidOperationException("AddInPlace: target must own contiguous storage");
        CheckSameDevice("AddInPlace", this, other);
        Backend.Binary(BinaryOp.Add, AsStrided(Shape), other.AsStrided(Shape), Storage, Shape);
    }

    /// <summary>Copies the values of <paramref name="source"/> (same shape) into this tensor's storage, in place.</summary>
    public void CopyFrom(Tensor source)
    {
        if (source.Shape != Shape)
            throw new ArgumentException($"CopyFrom: source shape {source.Shape} differs from target shape {Shape}");
        if (!IsContiguous || Offset != 0) throw new InvalidOperationException("CopyFrom: target must own contiguous storage");
        var src = source.Device.Equals(Device) ? source : source.To(Device);
        using (NoGrad()) src = src.DType == DType ? src : src.To(DType);
        Backend.CopyStrided(src.AsStrided(Shape), Shape, Storage, 0);
    }

    /// <summary>Errors unless all tensors are on the same device (names the op and the devices).</summary>
    internal static void CheckSameDevice(string op, Tensor a, Tensor b)
    {
        if (!a.Device.Equals(b.Device))
            throw new InvalidOperationException($"{op}: tensors are on different devices ({a.Device} and {b.Device}); move one with To(device)");
    }
}
