#!/usr/bin/env python3
"""Peer for `PureMoE.Bench quick moe`: the same MoE layer in PyTorch eager (CPU, or CUDA with --device cuda), same protocol.

The layer is Hugging Face's MixtralSparseMoeBlock algorithm (transformers/models/mixtral/modeling_mixtral.py):
gate Linear (no bias) -> softmax over all experts (fp32) -> topk -> renormalise -> for each expert: the tokens
routed to it (one_hot mask + torch.where), index_select of their rows, SwiGLU expert w2(silu(w1 x) * w3 x) scaled
by the routing weight, index_add_ into the output. fp32, dropless, bias-free Linear layers, init N(0, 0.02).

Protocol (identical to bench/PureMoE.Bench/MoeQuick.cs): a step is y = layer(x); y.backward(gy) with x requiring a
gradient and every .grad reset to None before the step; at least `warmup` untimed steps and one second of warm-up,
then the median of `repeats` timed steps. torch.set_num_threads(threads) (default 2, like ours).
With --device cuda the layer, x and gy live on the GPU (fp32, TF32 off), and every timed region ends with
torch.cuda.synchronize() (as `quick moe --device cuda` synchronises the ILGPU accelerator).
The breakdown times the same phases as ours in a separate instrumented pass (detached boundaries between phases).
"""
import argparse
import json
import time

parser = argparse.ArgumentParser()
parser.add_argument("--tokens", type=int, default=4096)
parser.add_argument("--d", type=int, default=512)
parser.add_argument("--ff", type=int, default=1024)
parser.add_argument("--experts", type=int, default=8)
parser.add_argument("--k", type=int, default=2)
parser.add_argument("--router", default="topk")
parser.add_argument("--repeats", type=int, default=10)
parser.add_argument("--warmup", type=int, default=3)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--device", default="cpu")
parser.add_argument("--json", action="store_true")
args = parser.parse_args()
if args.router != "topk":
    raise SystemExit(f"--router {args.router}: only topk is supported")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tf32 import disable_tf32  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(42)
disable_tf32(torch)
dev = torch.device(args.device)
cuda = dev.type == "cuda"


def sync():
    if cuda:
        torch.cuda.synchronize(dev)


class Expert(nn.Module):
    """MixtralBlockSparseTop2MLP: w2(silu(w1 x) * w3 x)."""

    def __init__(self, d, ff):
        super().__init__()
        self.w1 = nn.Linear(d, ff, bias=False)
        self.w2 = nn.Linear(ff, d, bias=False)
        self.w3 = nn.Linear(d, ff, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SparseMoeBlock(nn.Module):
    """MixtralSparseMoeBlock's forward, split into the phases the benchmark times."""

    def __init__(self, d, ff, experts, k):
        super().__init__()
        self.experts_count, self.k = experts, k
        self.gate = nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList([Expert(d, ff) for _ in range(experts)])
        for p in self.parameters():
            nn.init.normal_(p, std=0.02)

    def route(self, logits):
        w = F.softmax(logits, dim=1, dtype=torch.float)
        w, selected = torch.topk(w, self.k, dim=-1)
        w = w / w.sum(dim=-1, keepdim=True)
        return w, selected

    def dispatch(self, selected):
        mask = F.one_hot(selected, num_classes=self.experts_count).permute(2, 1, 0)
        return [torch.where(mask[e]) for e in range(self.experts_count)]  # (idx, top_x) per expert

    def forward(self, x):
        logits = self.gate(x)
        w, selected = self.route(logits)
        out = torch.zeros_like(x)
        for e, (idx, top_x) in enumerate(self.dispatch(selected)):
            h = self.experts[e](x[top_x]) * w[top_x, idx, None]
            out.index_add_(0, top_x, h.to(x.dtype))
        return out


layer = SparseMoeBlock(args.d, args.ff, args.experts, args.k).to(dev)
x = torch.randn(args.tokens, args.d).to(dev).requires_grad_(True)
gy = torch.randn(args.tokens, args.d).to(dev)
params = list(layer.parameters())


def step():
    for p in params:
        p.grad = None
    x.grad = None
    t0 = time.perf_counter()
    y = layer(x)
    sync()
    fwd = time.perf_counter() - t0
    y.backward(gy)
    sync()
    return fwd


def leaf(t):
    return t.detach().requires_grad_(True)


def instrumented_step():
    """The forward split at detached boundaries; then each phase's backward alone, in reverse. [phase][fwd, bwd] in ms."""
    for p in params:
        p.grad = None
    ms = {n: [0.0, 0.0] for n in ("gate", "route", "dispatch", "experts", "combine")}
    t = [time.perf_counter()]

    def lap(name, i):
        sync()
        now = time.perf_counter()
        ms[name][i] = (now - t[0]) * 1e3
        t[0] = now

    xg = leaf(x)
    logits = layer.gate(xg)
    lap("gate", 0)
    logits_leaf = leaf(logits)
    w, selected = layer.route(logits_leaf)
    lap("route", 0)
    xd = leaf(x)
    where = layer.dispatch(selected)
    rows = [xd[top_x] for idx, top_x in where]
    lap("dispatch", 0)
    rows_leaf = [leaf(r) for r in rows]
    outs = [layer.experts[e](r) for e, r in enumerate(rows_leaf)]
    lap("experts", 0)
    outs_leaf = [leaf(o) for o in outs]
    w_leaf = leaf(w)
    y = torch.zeros_like(x)
    for e, (idx, top_x) in enumerate(where):
        y.index_add_(0, top_x, outs_leaf[e] * w_leaf[top_x, idx, None])
    lap("combine", 0)
    y.backward(gy)
    lap("combine", 1)
    torch.autograd.backward(outs, [o.grad for o in outs_leaf])
    lap("experts", 1)
    torch.autograd.backward(rows, [r.grad for r in rows_leaf])
    lap("dispatch", 1)
    w.backward(w_leaf.grad)
    lap("route", 1)
    logits.backward(logits_leaf.grad)
    lap("gate", 1)
    return ms


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


warm_start = time.perf_counter()
i = 0
while i < args.warmup or time.perf_counter() - warm_start < 1.0:
    step()
    i += 1

times, fwd_times = [], []
for _ in range(max(1, args.repeats)):
    start = time.perf_counter()
    fwd = step()
    times.append((time.perf_counter() - start) * 1e3)
    fwd_times.append(fwd * 1e3)
median_ms = median(times)

warm = max(2, args.warmup)
samples = [instrumented_step() for _ in range(warm + max(1, args.repeats))][warm:]
phases = ["gate", "route", "dispatch", "experts", "combine"]
breakdown = {}
for p in phases:
    for i, d in enumerate(("fwd", "bwd")):
        breakdown[f"{p}_{d}"] = round(median([s[p][i] for s in samples]), 3)
overhead = median_ms - sum(breakdown.values())
breakdown["overhead"] = round(overhead, 3)
fractions = {p: round((breakdown[f"{p}_fwd"] + breakdown[f"{p}_bwd"]) / median_ms, 4) for p in phases}
fractions["overhead"] = round(overhead / median_ms, 4)
fractions["route_dispatch_combine"] = round(fractions["route"] + fractions["dispatch"] + fractions["combine"], 4)

result = {
    "bench": "moe", "impl": "torch", "router": "mixtral-softmax-topk-renorm", "tokens": args.tokens, "d": args.d,
    "ff": args.ff, "experts": args.experts, "k": args.k,
    "tokens_per_s": round(args.tokens / (median_ms / 1e3), 1), "median_ms": round(median_ms, 3),
    "min_ms": round(min(times), 3), "forward_ms": round(median(fwd_times), 3), "repeats": len(times),
    "threads": torch.get_num_threads(), "breakdown_ms": breakdown, "fractions": fractions,
    "torch": torch.__version__, "device": str(dev),
    "accelerator": torch.cuda.get_device_name(dev) if cuda else f"{torch.get_num_threads()} threads",
}
if args.json:
    print(json.dumps(result))
else:
    print(f"moe T={args.tokens} d={args.d} ff={args.ff} E={args.experts} k={args.k} torch {torch.__version__}: "
          f"median {median_ms:.1f} ms fwd+bwd (forward {result['forward_ms']:.1f} ms), "
          f"{result['tokens_per_s']:.0f} tokens/s, {result['threads']} threads, device {result['accelerator']}")
    for p in phases:
        print(f"  {p:<9} fwd {breakdown[p + '_fwd']:8.2f} ms  bwd {breakdown[p + '_bwd']:8.2f} ms  {100 * fractions[p]:5.1f}%")
    print(f"  overhead  {overhead:8.2f} ms  {100 * fractions['overhead']:5.1f}%")
    print(f"  route + dispatch + combine: {100 * fractions['route_dispatch_combine']:.1f}%")
