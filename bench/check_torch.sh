#!/usr/bin/env bash
# Correctness against PyTorch: for each router configuration, train a tiny Mixtral-format model with `puremoe train`
# (so routing is not at its random start), then compare `puremoe eval --grads` (logits, loss and every parameter's
# gradient) with an independent PyTorch float64 implementation of the same model (bench/peers/check_torch.py).
#   float64   ours in float64 against PyTorch float64: the same math, so only rounding may differ (tolerance 1e-12)
#   float32   ours in float32 (the SIMD CPU path) against PyTorch float64 (tolerance 1e-4)
#   DEVICES="ilgpu-cpu" (or "cuda" on a GPU machine) adds a float32 eval on each of those devices (tolerance 1e-4).
# Usage: bench/check_torch.sh            (about a minute here; exits 1 if any comparison is above its tolerance)
# Env: PY (default /usr/bin/python3: Debian's with python3-torch), PUREMOE_DLL (a built puremoe.dll: no build; the GPU
# run uses the one published beside the Engine tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-/usr/bin/python3}"
DEVICES="${DEVICES:-}"

if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "installing PyTorch (CPU) from Debian..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-numpy libopenblas0-pthread >&2
fi

cli="${PUREMOE_DLL:-}"
if [[ -z "$cli" ]]; then
    dotnet build -c Release examples/PureMoE.Cli -v q -nologo >&2
    cli=examples/PureMoE.Cli/bin/Release/net10.0/puremoe.dll
fi
puremoe() { CI=true dotnet "$cli" "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" bench/peers/check_torch.py tokens "$work/tokens.safetensors" --batch 4 --seq 64 --vocab 256 --seed 1
# A long context too: from 256 queries attention computes by blocks of queries (block-causal products).
"$PY" bench/peers/check_torch.py tokens "$work/tokens-long.safetensors" --batch 2 --seq 320 --vocab 256 --seed 2
# From 512 queries the CPU computes float32 attention tile by tile, without the score matrix.
"$PY" bench/peers/check_torch.py tokens "$work/tokens-tiles.safetensors" --batch 1 --seq 640 --vocab 256 --seed 3

# name | puremoe train flags (the tiny default model: 2 layers, d 64, 4 experts). The c2r models start from topk2's
# weights and profile it for their candidate lists; names ending in -long are evaluated on 2 × 320 tokens, -tiles on
# 1 × 640.
configs=(
    "topk2|--router topk --k 2"
    "topk1-capacity-st|--router topk --k 1 --capacity-factor 1.0 --straight-through true --aux-loss 0.01"
    "topk2-post-position|--router topk --k 2 --normalization post_softmax --capacity-factor 0.75 --drop-policy position --z-loss 0.001"
    "topk2-pre-pad|--router topk --k 2 --normalization pre_softmax --capacity-factor 1.0 --pad-to-capacity true"
    "rectify-paper|--router rectify --k 1 --capacity-factor 1.0 --fill-in true --unrouted ignore_kth --aux-loss 0.01"
    "rectify2-any|--router rectify --k 2 --capacity-factor 0.5 --fill-in false --unrouted any"
    "rectify1-top1gate|--router rectify --k 1 --capacity-factor 0.5 --fill-priority top1_gate --unrouted all"
    "relu|--router relu --k 2"
    "c2r-t1|--router c2r --k 2 --candidates 1 --from $work/topk2"
    "c2r-selected|--router c2r --k 2 --candidates 2 --weighting selected_softmax --selected-scale 2 --from $work/topk2"
    "topk2-long|--router topk --k 2 --seq 320 --batch 4"
    "topk2-tiles|--router topk --k 2 --seq 640 --batch 2"
)
status=0
for entry in "${configs[@]}"; do
    name=${entry%%|*}
    read -r -a flags <<<"${entry#*|}"
    model=$work/$name
    tokens=$work/tokens.safetensors
    [[ $name == *-long ]] && tokens=$work/tokens-long.safetensors
    [[ $name == *-tiles ]] && tokens=$work/tokens-tiles.safetensors
    puremoe train --steps 30 --out "$model" "${flags[@]}" >"$work/train.log" 2>&1 || { cat "$work/train.log"; exit 1; }
    ours=()
    for dtype in float64 float32; do
        puremoe eval --model "$model" --tokens "$tokens" --out "$model/$dtype.safetensors" --grads --dtype $dtype >/dev/null
        ours+=(--ours "$dtype=$model/$dtype.safetensors")
    done
    for device in $DEVICES; do
        puremoe eval --model "$model" --tokens "$tokens" --out "$model/$device.safetensors" --grads --device "$device" >/dev/null
        ours+=(--ours "$device=$model/$device.safetensors")
    done
    "$PY" bench/peers/check_torch.py --model "$model" --tokens "$tokens" "${ours[@]}" || status=1
done
echo "$([ $status -eq 0 ] && echo "all configurations match PyTorch" || echo "MISMATCH: see the lines above marked ABOVE")"
exit $status
