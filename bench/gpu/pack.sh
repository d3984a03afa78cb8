#!/usr/bin/env bash
# pack.sh: build what bench/gpu/run.sh needs on a GPU machine that has no .NET, and check that it fits the
# device tool's 64 MiB limit (working tree + carried paths). Run here, from anywhere in the repository:
#
#   bench/gpu/pack.sh          # publishes into .gpu/ (git-ignored through .git/info/exclude), prints the sizes
#
# Publishes, through gpu-pack.sh (GPU_PACK=path overrides where it is looked for): the Engine and Moe test
# projects (xunit v3 self-running test executables) and the bench; prunes what a GPU run never loads; checks that
# each published entry assembly starts; packs each as .gpu/<Project>.tar.xz beside .gpu/dotnet.tar.xz.
# Then carry `.gpu` in the device tool's run call (see bench/gpu/README.md).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
pack=${GPU_PACK:-}
for c in "$pack" ../shared/tools/gpu-pack.sh ../../shared/tools/gpu-pack.sh /work/shared/tools/gpu-pack.sh; do
  [ -n "$c" ] && [ -x "$c" ] && { pack=$c; break; }
done
[ -n "$pack" ] && [ -x "$pack" ] || { echo "pack.sh: gpu-pack.sh not found (set GPU_PACK=/path/to/gpu-pack.sh)" >&2; exit 2; }

projects=(tests/PureMoE.Engine.Tests/PureMoE.Engine.Tests.csproj tests/PureMoE.Moe.Tests/PureMoE.Moe.Tests.csproj
  bench/PureMoE.Bench/PureMoE.Bench.csproj)
if [ -d .git ]; then
  mkdir -p .git/info      # gpu-pack.sh appends to .git/info/exclude, which a fresh checkout may lack
  "$pack" "${projects[@]}"
else
  # A git worktree (.git is a file): gpu-pack.sh writes .git/info/exclude, so do its steps here (same commands).
  mkdir -p .gpu
  dn=$(dirname "$(readlink -f "$(command -v dotnet)")")
  [ -s .gpu/dotnet.tar.xz ] || tar -C "$dn" -cf - dotnet host/fxr shared/Microsoft.NETCore.App | xz -T2 -6 > .gpu/dotnet.tar.xz
  for proj in "${projects[@]}"; do
    name=$(basename "$proj" .csproj)
    rm -rf ".gpu/${name:?}"
    dotnet publish "$proj" -c Release -r linux-x64 --self-contained false -o ".gpu/$name" -p:DebugType=none >/dev/null
    echo "published $name -> .gpu/$name ($(du -sh ".gpu/$name" | cut -f1))"
  done
fi
git check-ignore -q .gpu || { echo "pack.sh: .gpu/ is not git-ignored" >&2; exit 1; }

# Prune what the GPU run never loads, to fit the 64 MiB: satellite resource folders (not the tests' Data/), ScottPlot's native Skia and
# HarfBuzz (plot tests only), BenchmarkDotNet's disassembler natives (the quick commands don't disassemble), XML docs.
for d in .gpu/PureMoE.Engine.Tests .gpu/PureMoE.Moe.Tests .gpu/PureMoE.Bench; do
  find "$d" -mindepth 1 -maxdepth 1 -type d ! -name Data -exec rm -rf {} +
  rm -f "$d"/libSkiaSharp.so "$d"/libHarfBuzzSharp.so "$d"/libcapstone.so "$d"/*.xml
done

# The published assemblies start with this machine's runtime (the one packed into .gpu/dotnet.tar.xz).
dotnet .gpu/PureMoE.Engine.Tests/PureMoE.Engine.Tests.dll -list traits >/dev/null
dotnet .gpu/PureMoE.Moe.Tests/PureMoE.Moe.Tests.dll -list traits >/dev/null
dotnet .gpu/PureMoE.Bench/PureMoE.Bench.dll --help 2>/dev/null || true
dotnet .gpu/PureMoE.Bench/PureMoE.Bench.dll quick gemm --device cpu --n 64 --repeats 1 --warmup 0 >/dev/null
echo "published assemblies start: ok"

# Each project as one .tar.xz (managed code compresses about 3×); run.sh unpacks them.
for name in PureMoE.Engine.Tests PureMoE.Moe.Tests PureMoE.Bench; do
  tar -C .gpu -cf - "$name" | xz -T2 -6 > ".gpu/$name.tar.xz"
  rm -rf ".gpu/${name:?}"
done
ls -la .gpu

# What the device tool sends: tracked files + untracked files git does not ignore + the carried .gpu.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | awk 'END{print $1}')
gpu=$(du -sb .gpu | cut -f1)
total=$((tree + gpu))
mib() { awk -v b="$1" 'BEGIN{printf "%.1f MiB", b/1048576}'; }
echo "working tree $(mib "$tree") + .gpu $(mib "$gpu") = $(mib "$total") (limit 64 MiB)"
[ "$total" -lt $((64 * 1048576)) ] || { echo "pack.sh: over the 64 MiB the device tool carries" >&2; exit 1; }
