#!/usr/bin/env bash
# Greedy decoding with a KV cache, time per generated token: PureMoE (`PureMoE.Bench quick decode`) vs PyTorch CPU
# eager (bench/peers/decode_torch.py), the same Mixtral-architecture MoE LM with random weights, both on 2 threads.
# Usage: bench/compare_decode.sh [model options, e.g. --hidden 128 --ff 256 --layers 4 --heads 4 --kv-heads 2]
#        env ROUNDS (default 3; the two programs alternate and each keeps its best), TOKENS (default 64)
# Default model: d 512, 8 layers, 8 heads (2 kv), 8 SwiGLU experts of 1024, top-2: 106,209,792 parameters.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}"
TOKENS="${TOKENS:-64}"
THREADS=2
PY=/usr/bin/python3   # Debian's interpreter with Debian's python3-torch

if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "installing PyTorch (CPU) from Debian..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-numpy libopenblas0-pthread >&2
fi

dotnet build -c Release bench/PureMoE.Bench -v q -nologo >&2
BENCH=bench/PureMoE.Bench/bin/Release/net10.0/PureMoE.Bench.dll
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus; $TOKENS tokens after a 16-byte prompt; model options: ${*:-(default)}"
best_ours=1e9
best_peer=1e9
for ((r = 0; r < ROUNDS; r++)); do
    ours=$(DOTNET_PROCESSOR_COUNT=$THREADS dotnet "$BENCH" quick decode --tokens "$TOKENS" --json "$@")
    peer=$(OMP_NUM_THREADS=$THREADS "$PY" bench/peers/decode_torch.py --tokens "$TOKENS" --threads $THREADS "$@")
    echo "round $r: $ours" >&2
    echo "round $r: $peer" >&2
    best_ours=$("$PY" -c "import json,sys; print(min($best_ours, json.loads(sys.argv[1])['ms_per_token']))" "$ours")
    best_peer=$("$PY" -c "import json,sys; print(min($best_peer, json.loads(sys.argv[1])['ms_per_token']))" "$peer")
done
"$PY" -c "o, p = $best_ours, $best_peer; print(f'ours {o:.2f} ms/token ({1000 / o:.0f} tokens/s), torch {p:.2f} ms/token ({1000 / p:.0f} tokens/s), torch/ours {p / o:.2f}')"
