#!/usr/bin/env bash
# Regenerates PublicAPI.Unshipped.txt of the packable libraries (PureMoE.Engine, PureMoE.Moe) from the code, so
# that the public API analyzer's RS0016 (public symbol not declared) and RS0017 (declared symbol gone) pass:
#   1. rebuilds both libraries with RS0016/RS0017 as warnings and removes every RS0017 symbol from
#      PublicAPI.Unshipped.txt (a symbol from PublicAPI.Shipped.txt is marked "*REMOVED*<symbol>" instead: a
#      shipped API removal stays visible in review);
#   2. applies the analyzer's own code fix for RS0016 (`dotnet format analyzers --diagnostics RS0016`), which adds
#      the new symbols with their nullable annotations;
#   3. sorts the Unshipped files (ordinal) so concurrent branches merge with few conflicts, and builds.
# Run it after a deliberate public API change and commit the PublicAPI.Unshipped.txt changes with it.
#
#   scripts/update-public-api.sh           # update both libraries, then build (fails if anything is left)
#   scripts/update-public-api.sh --check   # exit 1 with the RS0016/RS0017 list if the files are out of date
set -euo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
projects=(engine/PureMoE.Engine/PureMoE.Engine.csproj moe/PureMoE.Moe/PureMoE.Moe.csproj)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Builds both libraries from scratch with the API diagnostics as warnings; the log keeps RS0016/RS0017 lines.
scan() {
  : > "$log"
  for p in "${projects[@]}"; do
    dotnet build "$p" -c Release --no-incremental -nologo -v q -clp:NoSummary \
      -p:TreatWarningsAsErrors=false -p:WarningsAsErrors= 2>&1 | grep -E 'RS001[67]' | sort -u >> "$log" || true
  done
}

if [[ "${1:-}" == "--check" ]]; then
  scan
  if [[ -s "$log" ]]; then cat "$log"; echo "public API files are out of date: run scripts/update-public-api.sh"; exit 1; fi
  echo "public API files are up to date"
  exit 0
fi

# 1. Removed symbols (RS0017 points at the declaring line of a PublicAPI.*.txt file).
scan
python3 - "$log" <<'PY'
import re, sys, collections
removed = collections.defaultdict(set)
for line in open(sys.argv[1], encoding='utf-8'):
    m = re.match(r"(.*PublicAPI\.(Shipped|Unshipped)\.txt)\(\d+,\d+\): (?:warning|error) RS0017: Symbol '(.*)' is part of the declared API", line)
    if m: removed[(m.group(1), m.group(2))].add(m.group(3))
for (path, kind), symbols in removed.items():
    if kind == 'Unshipped':
        lines = open(path, encoding='utf-8').read().splitlines()
        kept = [l for l in lines if l not in symbols]
        open(path, 'w', encoding='utf-8').write('\n'.join(kept) + '\n')
    else:
        unshipped = path.replace('PublicAPI.Shipped.txt', 'PublicAPI.Unshipped.txt')
        with open(unshipped, 'a', encoding='utf-8') as f:
            for s in sorted(symbols): f.write('*REMOVED*' + s + '\n')
    print(f"{path}: {len(symbols)} removed symbol(s)")
PY

# 2. New symbols: the analyzer's code fix (engine first: the Moe project compiles against it).
for p in "${projects[@]}"; do
  dotnet format analyzers "$p" --diagnostics RS0016 --severity warn -v q
done

# 3. Normalise: "#nullable enable" first, then the entries sorted ordinally, no blank lines or duplicates.
for p in "${projects[@]}"; do
  f="$(dirname "$p")/PublicAPI.Unshipped.txt"
  { echo '#nullable enable'; grep -v -e '^#nullable enable$' -e '^[[:space:]]*$' "$f" | LC_ALL=C sort -u || true; } > "$f.tmp"
  mv "$f.tmp" "$f"
done

dotnet build "${projects[1]}" -c Release -nologo -v q -clp:NoSummary
echo "public API files updated: $(git diff --shortstat -- '*/PublicAPI.Unshipped.txt')"
