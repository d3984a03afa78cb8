#!/usr/bin/env python3
"""Peer for `PureMoE.Bench quick gemm --device cuda`: torch.matmul in float32 (cuBLAS SGEMM, TF32 off), same protocol.

Protocol (as bench/PureMoE.Bench/GemmDeviceQuick.cs): C = A @ B with A m×k, B k×n, float32, row-major, inputs
uniform in [-1, 1); at least `warmup` untimed calls and one second of warm-up, then the median of `repeats` calls.
On CUDA each call is timed with CUDA events around it (device time); --device cpu times with perf_counter.
TF32 is off (tf32.py: fp32_precision "ieee" on PyTorch ≥ 2.9, else allow_tf32 = False and matmul precision
"highest"): the comparison is plain fp32 FMA arithmetic on both sides.
"""
import argparse
import json
import time

parser = argparse.ArgumentParser()
parser.add_argument("--n", type=int, default=4096)
parser.add_argument("--m", type=int)
parser.add_argument("--k", type=int)
parser.add_argument("--ta", action="store_true", help="A stored transposed (k×m)")
parser.add_argument("--tb", action="store_true", help="B stored transposed (n×k)")
parser.add_argument("--repeats", type=int, default=10)
parser.add_argument("--warmup", type=int, default=3)
parser.add_argument("--device", default="cuda")
parser.add_argument("--threads", type=int, default=2, help="CPU threads (--device cpu)")
parser.add_argument("--json", action="store_true")
args = parser.parse_args()
m = args.m or args.n
k = args.k or args.n
n = args.n

import torch  # noqa: E402
from tf32 import disable_tf32, tf32_enabled  # noqa: E402

disable_tf32(torch)
if args.device == "cpu":
    torch.set_num_threads(args.threads)
dev = torch.device(args.device)
cuda = dev.type == "cuda"

g = torch.Generator(device="cpu").manual_seed(42)
a = (torch.rand(k, m, generator=g) * 2 - 1).t() if args.ta else torch.rand(m, k, generator=g) * 2 - 1
b = (torch.rand(n, k, generator=g) * 2 - 1).t() if args.tb else torch.rand(k, n, generator=g) * 2 - 1
a, b = a.to(dev), b.to(dev)
c = torch.empty(m, n, device=dev)


def once():
    torch.matmul(a, b, out=c)


def timed():
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        once()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    once()
    return (time.perf_counter() - t0) * 1e3


warm_start = time.perf_counter()
i = 0
while i < args.warmup or time.perf_counter() - warm_start < 1.0:
    timed()
    i += 1

times = sorted(timed() for _ in range(max(1, args.repeats)))
r = len(times)
median_ms = times[r // 2] if r % 2 else 0.5 * (times[r // 2 - 1] + times[r // 2])
gflops = 2.0 * m * n * k / (median_ms * 1e6)

# Correctness of the peer too: sampled elements against float64 on the host.
idx = torch.randint(0, m, (64,), generator=g), torch.randint(0, n, (64,), generator=g)
ah, bh, ch = a.double().cpu(), b.double().cpu(), c.cpu()
ref = (ah[idx[0]] * bh[:, idx[1]].t()).sum(1)
mag = (ah[idx[0]] * bh[:, idx[1]].t()).abs().sum(1)
max_rel = float(((ch[idx[0], idx[1]].double() - ref).abs() / mag).max())

name = torch.cuda.get_device_name(dev) if cuda else f"{torch.get_num_threads()} threads"
result = {"bench": "gemm", "impl": "torch", "device": str(dev), "accelerator": name, "n": n, "m": m, "k": k,
          "transA": args.ta, "transB": args.tb, "gflops": round(gflops, 2), "median_ms": round(median_ms, 3),
          "min_ms": round(times[0], 3), "repeats": r, "tf32": tf32_enabled(torch),
          "max_rel_err": max_rel, "torch": torch.__version__}
if args.json:
    print(json.dumps(result, separators=(",", ":")))
else:
    print(f"torch gemm {m}x{k} * {k}x{n} on {dev} [{name}]: median {median_ms:.3f} ms (min {times[0]:.3f}), "
          f"{gflops:.1f} GFLOP/s, tf32 off, max rel err {max_rel:.2e}, torch {torch.__version__}")
