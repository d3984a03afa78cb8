#!/usr/bin/env bash
# Side-by-side MoE layer forward+backward: PureMoE (bench/PureMoE.Bench `quick moe`) vs PyTorch CPU eager
# (bench/peers/moe_torch.py, HF MixtralSparseMoeBlock algorithm), same protocol (warm-up, then median of
# REPEATS steps), both on 2 threads, same sizes.
# Usage: bench/compare_moe.sh [extra quick-moe options, e.g. --tokens 4096 --d 512 --ff 1024 --experts 8 --k 2]
# env: REPEATS (default 10), ROUNDS (default 3; the two programs alternate and each keeps its best median,
# which filters out rounds disturbed by other processes on a shared machine, identically for both sides).
set -euo pipefail
cd "$(dirname "$0")/.."

REPEATS="${REPEATS:-10}"
ROUNDS="${ROUNDS:-3}"
THREADS=2
PY=/usr/bin/python3 # Debian's interpreter: the python3 on PATH may be another one without torch.
SIZE=(--tokens 4096 --d 512 --ff 1024 --experts 8 --k 2 --router topk)
if (($# > 0)); then SIZE=("$@"); fi

if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "installing PyTorch from Debian..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-numpy libopenblas0-pthread >&2
fi

dotnet build -c Release bench/PureMoE.Bench -v q -nologo >&2
OURS=(dotnet bench/PureMoE.Bench/bin/Release/net10.0/PureMoE.Bench.dll quick moe)
PEER=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS "$PY" bench/peers/moe_torch.py)

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus; size: ${SIZE[*]}; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
ours_all=()
peer_all=()
for ((r = 0; r < ROUNDS; r++)); do
    ours_all+=("$("${OURS[@]}" "${SIZE[@]}" --repeats "$REPEATS" --json)")
    peer_all+=("$("${PEER[@]}" "${SIZE[@]}" --repeats "$REPEATS" --threads $THREADS --json)")
    echo "${ours_all[-1]}" >&2
    echo "${peer_all[-1]}" >&2
done
"$PY" - "$ROUNDS" "${ours_all[@]}" "${peer_all[@]}" <<'PYEOF'
import json, sys
rounds = int(sys.argv[1])
runs = [json.loads(x) for x in sys.argv[2:]]
ours = max(runs[:rounds], key=lambda r: r["tokens_per_s"])
peer = max(runs[rounds:], key=lambda r: r["tokens_per_s"])
print(f"{'':10} {'tokens/s':>10} {'ms/step':>9} {'fwd ms':>8}  route+dispatch+combine")
for name, r in (("puremoe", ours), ("pytorch", peer)):
    print(f"{name:10} {r['tokens_per_s']:10.0f} {r['median_ms']:9.1f} {r['forward_ms']:8.1f}  {100 * r['fractions']['route_dispatch_combine']:.1f}%")
print(f"ratio ours/PyTorch (tokens/s): {ours['tokens_per_s'] / peer['tokens_per_s']:.2f}")
for name, r in (("puremoe", ours), ("pytorch", peer)):
    print(f"{name} breakdown ms: " + ", ".join(f"{k} {v:.1f}" for k, v in r["breakdown_ms"].items()))
PYEOF
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg) (a shared machine: above ~2 both sides are slowed; rerun when quiet)"
