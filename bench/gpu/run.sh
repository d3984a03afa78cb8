#!/usr/bin/env bash
# run.sh: everything a GPU session measures, in one call, ON the GPU machine (which has a driver, PyTorch and the
# CUDA toolkit, but no .NET), from the repository root, with .gpu/ carried (bench/gpu/pack.sh builds it here):
#
#   bash bench/gpu/run.sh [PART...]  # writes logs and a summary under $OUT (default /tmp/puremoe-gpu-out)
#
# PARTs (default: all three, in this order; a device call is limited to 600 s, so a run may be split over calls):
#   tests   the CUDA and PTX tests, ptxas and SASS counts of the large SGEMM kernel
#   bench   SGEMM, IndexAdd, ArgSort and the MoE layer against the PyTorch peers
#   cli     `puremoe train` end to end on the GPU and on the CPU, an absent device's error, and bench/check_torch.sh
#           (every router's logits and gradients against PyTorch float64, on the CPU and on the GPU)
#
# Steps: unpack the .NET runtime and the published projects from .gpu/; make libcuda.so resolvable (ILGPU 1.5.3
# loads that name; drivers often ship only libcuda.so.1); nvidia-smi -L; the Engine and Moe tests with the traits
# Device=Cuda (skips fail: a skipped CUDA test means no GPU was found) and Device=Ptx; ptxas -v and SASS counts of
# the large SGEMM kernel; `quick gemm --device cuda` (sizes, kernels, transpositions), `quick indexadd` (direct and
# sorted paths), `quick argsort` (a long row; rank counting and radix sort at n = 4096) and `quick moe --device cuda`
# (each SGEMM kernel choice, grouped GEMM on and off);
# the PyTorch peers (bench/peers/gemm_torch.py, TF32 off; bench/peers/moe_torch.py --device cuda). Without
# nvidia-smi it runs the same steps on ILGPU's CPU accelerator with tiny shapes (to exercise this script), and the
# peers on the CPU if PyTorch is importable. Files in $OUT (at most 8 come back from the device tool):
#   summary.txt   the table (ours vs PyTorch) and each step's status; also printed last
#   results.jsonl every benchmark's JSON line
#   tests.log     test output;  tests.xml the Engine tests' xUnit results
#   bench.log     benchmark stderr and text;  ptx.txt ptxas -v and SASS instruction counts;  Sgemm128.ptx
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
parts=" ${*:-tests bench cli} "
for part in $parts; do
  case $part in tests | bench | cli) ;; *) echo "run.sh: unknown part '$part' (parts: tests, bench, cli)" >&2; exit 2 ;; esac
done
want() { [[ "$parts" == *" $1 "* ]]; }
OUT=${OUT:-/tmp/puremoe-gpu-out}
mkdir -p "$OUT"
summary=$OUT/summary.txt results=$OUT/results.jsonl tests=$OUT/tests.log bench=$OUT/bench.log
: >"$summary"; : >"$results"; : >"$tests"; : >"$bench"
failures=0
exec 3>&1 # the console, for status lines while a step's output goes to a log
say() { echo "$*" | tee -a "$summary" >&3; }
step() { # step NAME TIMEOUT CMD...: runs CMD, records its status
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  [ $rc -eq 0 ] || failures=$((failures + 1))
  say "$(printf '%-44s %s (%ds)' "$name" "$([ $rc -eq 0 ] && echo ok || echo "FAILED rc=$rc")" $((SECONDS - t0)))"
  return $rc
}

# --- the .NET runtime and the published projects
[ -s .gpu/dotnet.tar.xz ] || { say "no .gpu/dotnet.tar.xz: run bench/gpu/pack.sh on the build machine and carry .gpu"; exit 2; }
work=$(mktemp -d)
tar -C "$work" -xJf .gpu/dotnet.tar.xz
for p in PureMoE.Engine.Tests PureMoE.Moe.Tests PureMoE.Bench; do
  if [ -s ".gpu/$p.tar.xz" ]; then tar -C "$work" -xJf ".gpu/$p.tar.xz"; elif [ -d ".gpu/$p" ]; then cp -r ".gpu/$p" "$work/"; fi
  [ -f "$work/$p/$p.dll" ] || { say "missing $p in .gpu/ (run bench/gpu/pack.sh)"; exit 2; }
done
export DOTNET_ROOT=$work PATH=$work:$PATH DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
say "dotnet $(dotnet --list-runtimes 2>/dev/null | head -1)"

# --- the driver: ILGPU opens plain libcuda.so
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so '; then
  lib1=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}')
  if [ -n "$lib1" ]; then
    ln -sf "$lib1" "$work/libcuda.so"
    export LD_LIBRARY_PATH=$work:${LD_LIBRARY_PATH:-}
    say "libcuda.so -> $lib1"
  fi
fi

gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >"$OUT/nvidia-smi.txt" 2>&1; then
  gpu=1
  cat "$OUT/nvidia-smi.txt" >>"$summary"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv >>"$summary" 2>&1
  rm -f "$OUT/nvidia-smi.txt"
else
  rm -f "$OUT/nvidia-smi.txt"
  say "nvidia-smi missing or failing: no GPU; running the CUDA steps on ILGPU's CPU accelerator with tiny shapes instead"
fi
dev=$([ $gpu -eq 1 ] && echo cuda || echo ilgpu-cpu)
py=${PY:-$(command -v python3 || true)} # PY overrides: the interpreter with PyTorch
torch_ok=0
[ -n "$py" ] && "$py" -c 'import torch' 2>/dev/null && torch_ok=1

# --- tests
if want tests; then
engine=(dotnet "$work/PureMoE.Engine.Tests/PureMoE.Engine.Tests.dll" -noColor -noLogo)
moe=(dotnet "$work/PureMoE.Moe.Tests/PureMoE.Moe.Tests.dll" -noColor -noLogo)
ptxdir=$(mktemp -d)
export PUREMOE_DUMP_PTX=$ptxdir # the Ptx tests write the PTX they check there
if [ $gpu -eq 1 ]; then
  step "Engine tests (Device=Cuda, Device=Ptx)" 480 \
    "${engine[@]}" -trait "Device=Cuda" -trait "Device=Ptx" -failSkips -result-xml "$OUT/tests.xml" >>"$tests" 2>&1
  # Moe tests with a CUDA trait (none may exist yet: "no tests" is reported, not failed).
  if "${moe[@]}" -list traits 2>/dev/null | grep -q '"Cuda"'; then
    step "Moe tests (Device=Cuda)" 300 "${moe[@]}" -trait "Device=Cuda" -failSkips >>"$tests" 2>&1
  else
    say "Moe tests: none with Device=Cuda"
  fi
else
  step "Engine tests (emulator SGEMM, Ptx)" 480 \
    "${engine[@]}" -class '*IlgpuCpuGemmTests' -class '*IlgpuPtxTests' -result-xml "$OUT/tests.xml" >>"$tests" 2>&1
fi
unset PUREMOE_DUMP_PTX
grep -h "Total:" "$tests" | sed 's/^ */  /' | tee -a "$summary"

# --- the large kernel's machine code: registers, spills, FFMA and 16-byte shared loads
if [ -s "$ptxdir/Sgemm128.ptx" ]; then
  cp "$ptxdir/Sgemm128.ptx" "$OUT/"
  ptxas=$(command -v ptxas || ls /usr/local/cuda*/bin/ptxas 2>/dev/null | head -1)
  if [ -n "$ptxas" ]; then
    {
      "$ptxas" -arch=sm_90 -v "$ptxdir/Sgemm128.ptx" -o "$ptxdir/Sgemm128.cubin" 2>&1
      cuobjdump=$(command -v cuobjdump || echo "$(dirname "$ptxas")/cuobjdump")
      "$cuobjdump" -sass "$ptxdir/Sgemm128.cubin" >"$ptxdir/sass.txt" 2>&1 &&
        for op in FFMA LDS.128 LDS LDG STG LDL STL BAR; do printf '%-8s %s\n' "$op" "$(grep -cE "\\b$op\\b" "$ptxdir/sass.txt")"; done
    } >"$OUT/ptx.txt" 2>&1
    sed 's/^/  /' "$OUT/ptx.txt" | grep -E "registers|spill|FFMA|LDS|LDL|STL" | tee -a "$summary"
  else
    say "ptxas not found: PTX kept in Sgemm128.ptx"
  fi
fi
fi # tests

# --- benchmarks
if want bench; then
ours=(dotnet "$work/PureMoE.Bench/PureMoE.Bench.dll" quick)
gemm() { # gemm ARGS...: one ours run, its JSON line into results.jsonl
  step "quick gemm $*" 180 bash -c '"$@" --json 2>>"'"$bench"'" | tee -a "'"$results"'"' _ "${ours[@]}" gemm --device $dev "$@"
}
indexadd() { # indexadd ARGS...: IndexAdd, direct or sorted path (the crossover is not tuned yet)
  step "quick indexadd $*" 180 bash -c '"$@" --json 2>>"'"$bench"'" | tee -a "'"$results"'"' _ "${ours[@]}" indexadd --device $dev "$@"
}
argsort() { # argsort ARGS...: ArgSort of float32 rows, rank counting or radix sort (the crossover is not tuned yet)
  step "quick argsort $*" 180 bash -c '"$@" --json 2>>"'"$bench"'" | tee -a "'"$results"'"' _ "${ours[@]}" argsort --device $dev "$@"
}
peer_gemm() {
  [ $torch_ok -eq 1 ] || return 0
  step "torch gemm $*" 180 bash -c '"$@" --json 2>>"'"$bench"'" | tee -a "'"$results"'"' _ "$py" bench/peers/gemm_torch.py "$@"
}
if [ $gpu -eq 1 ]; then
  for n in 1024 2048 4096 8192; do gemm --n $n; peer_gemm --n $n --device cuda; done
  gemm --n 4096 --kernel tiled
  gemm --n 4096 --kernel large
  gemm --n 4096 --ta; peer_gemm --n 4096 --ta --device cuda
  gemm --n 4096 --tb; peer_gemm --n 4096 --tb --device cuda
  gemm --n 4095 --m 4097 --k 4093
  # IndexAdd (the backward of IndexSelect) at a large size (4096 rows, inner 1024, 8192 indices), then the crossover.
  indexadd --axis 4096 --inner 1024 --count 8192 --sorted
  indexadd --axis 4096 --inner 1024 --count 8192 --direct --repeats 3 --warmup 1
  for c in 32 128 512; do indexadd --axis 4096 --inner 1024 --count $c --direct; indexadd --axis 4096 --inner 1024 --count $c --sorted; done
  # ArgSort of one long row (the radix path), then both paths at the rank-counting limit (rows·n² = 2²⁴).
  argsort --rows 1 --n 100000
  for path in --ranks --radix; do argsort --rows 1 --n 4096 $path; done
  # The experts' GEMMs (about 1024 rows each) make fewer 128×128 tiles than an H100 has SMs, so Auto picks the
  # smaller kernel for them; each forced choice is measured too, to settle that threshold.
  for kernel in auto tiled large; do
    step "quick moe --device cuda --kernel $kernel" 300 bash -c '"$@" 2>>"'"$bench"'" | tee -a "'"$results"'"' _ "${ours[@]}" moe --device cuda --kernel $kernel --json
  done
  # Grouped GEMM (every expert in one SgemmGrouped128 launch per product) against one GEMM per expert, forced both
  # ways (the auto run above shows which one Auto picks: grouped_launches_per_step in its JSON).
  for grouped in on off; do
    step "quick moe --device cuda --grouped $grouped" 300 bash -c '"$@" 2>>"'"$bench"'" | tee -a "'"$results"'"' _ "${ours[@]}" moe --device cuda --grouped $grouped --json
  done
  # Expert parallelism on the GPUs there are (one on a lent machine: P = 1; P > 1 is skipped with a line saying so).
  step "quick exchange --device cuda" 300 bash -c '"$@" 2>>"'"$bench"'" | tee -a "'"$results"'"' _ "${ours[@]}" exchange --device cuda --no-c2r --json
  if [ $torch_ok -eq 1 ]; then
    step "torch moe --device cuda" 300 bash -c '"$@" 2>>"'"$bench"'" | tee -a "'"$results"'"' _ "$py" bench/peers/moe_torch.py --device cuda --json
  fi
else
  gemm --n 96 --m 70 --k 33 --repeats 3 --warmup 1
  gemm --n 64 --ta --tb --repeats 3 --warmup 1
  peer_gemm --n 96 --m 70 --k 33 --device cpu --repeats 3
  indexadd --axis 64 --inner 4 --count 100 --direct --repeats 2
  indexadd --axis 64 --inner 4 --count 100 --sorted --repeats 2
  argsort --rows 2 --n 300 --radix --repeats 2
  step "quick moe --device ilgpu-cpu (tiny)" 300 bash -c '"$@" 2>>"'"$bench"'" | tee -a "'"$results"'"' _ \
    "${ours[@]}" moe --device ilgpu-cpu --tokens 64 --d 32 --ff 64 --experts 4 --repeats 2 --warmup 1 --json
  if [ $torch_ok -eq 1 ]; then
    step "torch moe --device cpu (tiny)" 300 bash -c '"$@" 2>>"'"$bench"'" | tee -a "'"$results"'"' _ \
      "$py" bench/peers/moe_torch.py --tokens 64 --d 32 --ff 64 --experts 4 --repeats 2 --warmup 1 --json
  fi
fi

# --- the table: ours vs PyTorch per configuration
if [ -n "$py" ]; then
  "$py" - "$results" <<'PYEOF' | tee -a "$summary"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def key(r): return (r["m"], r["n"], r["k"], r.get("transA", False), r.get("transB", False))
torch = {key(r): r for r in rows if r["bench"] == "gemm" and r["impl"] == "torch"}
print(f"\n{'gemm m x n x k':<22} {'ours GFLOP/s':>13} {'torch GFLOP/s':>14} {'ratio':>6}  kernel")
for r in rows:
    if r["bench"] != "gemm" or r["impl"] != "puremoe":
        continue
    t = torch.get(key(r))
    tag = ("ᵀA " if r.get("transA") else "") + ("ᵀB" if r.get("transB") else "")
    shape = f"{r['m']}x{r['n']}x{r['k']} {tag}".strip()
    ratio = f"{r['gflops'] / t['gflops']:.2f}" if t else "-"
    print(f"{shape:<22} {r['gflops']:>13.1f} {t['gflops'] if t else float('nan'):>14.1f} {ratio:>6}  {r['kernel']} err {r.get('max_rel_err')}")
moe = [r for r in rows if r["bench"] == "moe"]
if moe:
    print(f"\n{'moe':<10} {'tokens/s':>10} {'median ms':>10} {'fwd ms':>8}  {'kernel/grouped (launches/step)':<32} device")
    for r in moe:
        choice = f"{r['kernel']}/{r['grouped']} ({r['grouped_launches_per_step']})" if "kernel" in r else "-"
        print(f"{r['impl']:<10} {r['tokens_per_s']:>10.0f} {r['median_ms']:>10.2f} {r['forward_ms']:>8.2f}  {choice:<32} {r.get('accelerator', r.get('device'))}")
    # Ours with the default choices (auto/auto) against PyTorch.
    ours = next((r for r in moe if r["impl"] == "puremoe" and r.get("kernel", "auto") == "auto" and r.get("grouped", "auto") == "auto"), None)
    torch_moe = next((r for r in moe if r["impl"] == "torch"), None)
    if ours and torch_moe:
        print(f"ours (auto) / torch tokens/s: {ours['tokens_per_s'] / torch_moe['tokens_per_s']:.2f}")
PYEOF
fi
fi # bench

# --- the command line end to end: the default training job on the device and on the CPU, the error for a device
# that is not there, and every router's logits and gradients against PyTorch (float64 and float32 on the CPU, and
# float32 on the GPU). puremoe.dll is published beside the Engine tests, which reference the CLI.
if want cli; then
  cli=$work/PureMoE.Engine.Tests/puremoe.dll
  log=$(mktemp)
  # The default job on a GPU; on the emulator (about 0.1 GFLOP/s) a few steps of a smaller model check the path.
  train_args=$([ $gpu -eq 1 ] || echo "--steps 4 --batch 4 --seq 32 --hidden 32 --ff 64 --eval-batches 1 --warmup 1")
  for d in $dev cpu; do
    step "puremoe train --device $d ${train_args:-(the default job)}" 300 \
      env CI=true dotnet "$cli" train --device $d $train_args --out "$work/train-$d" >"$log" 2>&1
    cat "$log" >>"$bench"
    say "  $(grep -E '^(done in|error)' "$log" | tail -1)"
  done
  absent=$([ $gpu -eq 1 ] && echo cuda:99 || echo cuda)
  step "puremoe train --device $absent fails clearly" 60 \
    bash -c '! CI=true dotnet "$1" train --device "$2" --steps 1 >"$3" 2>&1 && grep -q "no such device" "$3"' _ "$cli" $absent "$log"
  say "  $(head -1 "$log")"
  if [ $torch_ok -eq 1 ]; then
    step "bench/check_torch.sh (cpu$([ $gpu -eq 1 ] && echo ', cuda'))" 420 \
      env PY="$py" PUREMOE_DLL="$cli" DEVICES="$([ $gpu -eq 1 ] && echo cuda)" bash bench/check_torch.sh >"$log" 2>&1
    grep -vE '^$|Build|Warn|Error|Elapsed' "$log" | sed 's/^/  /' | tee -a "$summary" >&3
  else
    say "bench/check_torch.sh: skipped (no PyTorch for $py)"
  fi
  rm -f "$log"
fi # cli
say ""
say "failures: $failures; logs in $OUT: $(ls "$OUT" | tr '\n' ' ')"
[ $failures -eq 0 ]
