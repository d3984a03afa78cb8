#!/usr/bin/env python3
"""Peer for `PureMoE.Bench quick gemm`: numpy float32 matmul (OpenBLAS sgemm), same protocol.

Protocol (identical to bench/PureMoE.Bench/GemmQuick.cs): C = A @ B with A m×k, B k×n, float32,
row-major (C-contiguous), at least `warmup` untimed calls and one second of warm-up, then the median of `repeats` timed calls.
Set the BLAS thread count with --threads (default 2, like ours); it is applied through threadpoolctl
when available, else through OPENBLAS_NUM_THREADS, which must then be set before numpy is imported.
"""
import argparse
import json
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--n", type=int, required=True)
parser.add_argument("--m", type=int)
parser.add_argument("--k", type=int)
parser.add_argument("--repeats", type=int, default=10)
parser.add_argument("--warmup", type=int, default=3)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--json", action="store_true")
args = parser.parse_args()
m = args.m or args.n
k = args.k or args.n
n = args.n

os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
import numpy as np  # noqa: E402  (after the thread-count environment is set)

blas = {"library": "unknown", "threads": None, "kernel": None}
try:
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=args.threads, user_api="blas")
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            blas = {"library": pool.get("internal_api"), "threads": pool.get("num_threads"),
                    "kernel": pool.get("architecture"), "version": pool.get("version")}
            break
except ImportError:
    blas["threads"] = int(os.environ["OPENBLAS_NUM_THREADS"])

rng = np.random.default_rng(42)
a = rng.uniform(-1, 1, size=(m, k)).astype(np.float32)
b = rng.uniform(-1, 1, size=(k, n)).astype(np.float32)
c = np.empty((m, n), dtype=np.float32)

warm_start = time.perf_counter()
i = 0
while i < args.warmup or time.perf_counter() - warm_start < 1.0:
    np.matmul(a, b, out=c)
    i += 1

times = []
for _ in range(max(1, args.repeats)):
    start = time.perf_counter()
    np.matmul(a, b, out=c)
    times.append((time.perf_counter() - start) * 1e3)

times.sort()
r = len(times)
median_ms = times[r // 2] if r % 2 else 0.5 * (times[r // 2 - 1] + times[r // 2])
gflops = 2.0 * m * n * k / (median_ms * 1e6)
result = {"bench": "gemm", "impl": "numpy", "n": n, "m": m, "k": k, "gflops": round(gflops, 1),
          "median_ms": round(median_ms, 3), "min_ms": round(times[0], 3), "repeats": r,
          "threads": blas["threads"], "kernel": blas["kernel"], "blas": blas["library"],
          "numpy": np.__version__}
if args.json:
    print(json.dumps(result, separators=(",", ":")))
else:
    print(f"numpy gemm {m}x{k} * {k}x{n}: median {median_ms:.3f} ms (min {times[0]:.3f}), "
          f"{gflops:.1f} GFLOP/s, {blas['threads']} threads, {blas['library']} kernel {blas['kernel']}",
          file=sys.stdout)
