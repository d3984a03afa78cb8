#!/usr/bin/env bash
# Side-by-side SGEMM throughput: PureMoE (bench/PureMoE.Bench `quick gemm`) vs numpy/OpenBLAS
# (bench/peers/gemm_numpy.py), same protocol (warm-up, then median of REPEATS), both on 2 threads.
# Usage: bench/compare_gemm.sh [sizes...]   (default: 1024 2048; env REPEATS, default 10; ROUNDS, default 3)
# The two programs alternate ROUNDS times per size and each keeps its best median: on a shared/noisy
# machine that filters out rounds disturbed by other processes, identically for both sides.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=("${@:-1024 2048}")
read -r -a SIZES <<<"${SIZES[*]}"
REPEATS="${REPEATS:-10}"
ROUNDS="${ROUNDS:-3}"
THREADS=2
PY=/usr/bin/python3 # Debian's interpreter: the python3 on PATH may be another one without numpy.

if ! "$PY" -c 'import numpy' 2>/dev/null; then
    echo "installing numpy/OpenBLAS from Debian..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-numpy libopenblas0-pthread >&2
    # Optional: lets the peer script set and report the BLAS thread count and kernel precisely.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-threadpoolctl >&2 || true
fi

dotnet build -c Release bench/PureMoE.Bench -v q -nologo >&2
OURS=(dotnet bench/PureMoE.Bench/bin/Release/net10.0/PureMoE.Bench.dll quick gemm)
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE may be set for other tools on some machines; let OpenBLAS
# autodetect for this measurement only.
PEER=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=$THREADS "$PY" bench/peers/gemm_numpy.py)

if ! "$PY" -c 'import threadpoolctl' 2>/dev/null; then
    echo "threadpoolctl not available; OpenBLAS configuration:" >&2
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_VERBOSE=2 "$PY" -c 'import numpy; numpy.show_config()' >&2 || true
fi

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus"
printf '%-6s %14s %14s %8s\n' n "ours GFLOP/s" "numpy GFLOP/s" ratio
for n in "${SIZES[@]}"; do
    ours_all=()
    peer_all=()
    for ((r = 0; r < ROUNDS; r++)); do
        ours_all+=("$("${OURS[@]}" --n "$n" --repeats "$REPEATS" --json)")
        peer_all+=("$("${PEER[@]}" --n "$n" --repeats "$REPEATS" --threads $THREADS --json)")
        echo "${ours_all[-1]}" >&2
        echo "${peer_all[-1]}" >&2
    done
    "$PY" - "$n" "$ROUNDS" "${ours_all[@]}" "${peer_all[@]}" <<'PYEOF'
import json, sys
n, rounds = sys.argv[1], int(sys.argv[2])
runs = [json.loads(x) for x in sys.argv[3:]]
ours = max((r["gflops"] for r in runs[:rounds]))
peer = max((r["gflops"] for r in runs[rounds:]))
print(f"{n:<6} {ours:14.1f} {peer:14.1f} {ours / peer:8.2f}")
PYEOF
done
