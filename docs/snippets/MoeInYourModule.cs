using PureMoE;
using PureMoE.Moe;
using PureMoE.Moe.Routing;
using PureMoE.Nn;

// Your own module: a projection followed by a Mixture-of-Experts layer with a residual connection.
public sealed class MyMoeBlock : Module
{
    private readonly Linear _proj;
    private readonly MoeLayer _moe;

    public MyMoeBlock(int dim, IRouter router, Rng rng)
    {
        _proj = RegisterModule("proj", new Linear(dim, dim, rng));
        _moe = RegisterModule("moe", new MoeLayer(dim, intermediateSize: 2 * dim, router, rng));
    }

    public Tensor Forward(Tensor x) => x.Add(_moe.Forward(_proj.Forward(x)));    // [..., dim] -> [..., dim]

    public RoutingStats? LastStats => _moe.LastStats;

    // Any of the four routers over 4 experts.
    public static IRouter Router(string name) => name switch
    {
        "topk" => new TopKRouter(4, new TopKOptions { K = 2 }),
        "rectify" => new RectifyRouter(4, new RectifyOptions { K = 1, CapacityFactor = 1.0 }),
        "relu" => new ReluRouter(4, new ReluRouterOptions { K = 2 }),
        "c2r" => new C2RRouter(4, new C2ROptions { K = 2 }, [[1, 2, 3], [0, 2, 3], [3, 0, 1], [2, 0, 1]]),
        _ => throw new ArgumentException($"unknown router {name}"),
    };
}
