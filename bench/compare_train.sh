#!/usr/bin/env bash
# Full training step throughput (forward, loss, backward, clip, AdamW) of the same tiny Mixtral-architecture MoE LM:
# PureMoE (`puremoe train`) vs PyTorch CPU (bench/peers/train_torch.py), in the same run, both on 2 threads.
# Usage: bench/compare_train.sh [data file]   (default: the generated corpus written to a temp file;
#        env STEPS (default 30), ROUNDS (default 2; each side keeps its best), BATCH and SEQ (default 16 × 128),
#        HIDDEN, FF, LAYERS, HEADS, KV_HEADS, EXPERTS (default the compare model: 128, 256, 4, 4, 2, 8))
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-30}"
ROUNDS="${ROUNDS:-2}"
THREADS=2
PY=/usr/bin/python3   # Debian's interpreter with Debian's python3-torch
BATCH="${BATCH:-16}"
SEQ="${SEQ:-128}"     # SEQ=512 BATCH=4: the same tokens per step at a longer context
HIDDEN="${HIDDEN:-128}" FF="${FF:-256}" LAYERS="${LAYERS:-4}" HEADS="${HEADS:-4}" KV_HEADS="${KV_HEADS:-2}" EXPERTS="${EXPERTS:-8}"
MODEL=(--batch "$BATCH" --seq "$SEQ" --hidden "$HIDDEN" --ff "$FF" --layers "$LAYERS" --heads "$HEADS" --kv-heads "$KV_HEADS" --experts "$EXPERTS" --k 2)

if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "installing PyTorch (CPU) from Debian..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-numpy libopenblas0-pthread >&2
fi

dotnet build -c Release examples/PureMoE.Cli -v q -nologo >&2
CLI=examples/PureMoE.Cli/bin/Release/net10.0/puremoe.dll
DATA="${1:-}"
if [[ -z "$DATA" ]]; then
    DATA=$(mktemp --suffix=.txt)
    # The embedded corpus, as text: train on it for 1 step with a tiny model and no output is wasteful; instead
    # write a deterministic text here (PyTorch needs a file; ours trains on the same file).
    "$PY" - "$DATA" <<'PYEOF'
import random, sys
r = random.Random(1)
words = "the cat a dog my friend sees likes follows the river a red ball count rev".split()
with open(sys.argv[1], "w") as f:
    for _ in range(40000):
        f.write(" ".join(r.choice(words) for _ in range(8)) + f" {r.randint(0, 99)}+{r.randint(0, 99)}\n")
PYEOF
fi

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus; data $DATA; $STEPS steps of ${BATCH}x${SEQ} tokens; d $HIDDEN, $LAYERS layers, $EXPERTS experts top-2, ff $FF"
best_ours=0
best_peer=0
for ((r = 0; r < ROUNDS; r++)); do
    # Ours: tokens/s over all steps (first step's JIT included; one validation batch at step 1 and at the end).
    ours=$(CI=true DOTNET_PROCESSOR_COUNT=$THREADS dotnet "$CLI" train --data "$DATA" --steps "$STEPS" "${MODEL[@]}" \
        --eval-every 100000 --eval-batches 1 --warmup 3 | sed -n 's/^done in .* (\([0-9,]*\) tok\/s[;)].*/\1/p' | tr -d ,)
    peer=$(OMP_NUM_THREADS=$THREADS "$PY" bench/peers/train_torch.py --data "$DATA" --steps "$STEPS" --threads $THREADS \
        "${MODEL[@]}")
    peer_tps=$(echo "$peer" | "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["tokens_per_s"]))')
    echo "round $r: ours $ours tok/s; $peer" >&2
    (( ours > best_ours )) && best_ours=$ours
    (( peer_tps > best_peer )) && best_peer=$peer_tps
done
"$PY" -c "o, p = $best_ours, $best_peer; print(f'ours {o} tok/s, torch {p} tok/s, ours/torch {o / p:.2f}')"
