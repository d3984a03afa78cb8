#!/usr/bin/env bash
# Regenerates PublicAPI.Unshipped.txt of the packable libraries (PureMoE.Engine, PureMoE.Moe) from the code:
# applies the PublicApiAnalyzers code fixes for RS0016 (public symbol not declared: add it) and RS0017 (declared
# symbol no longer public: remove it), then checks that the build is clean. Run it after a deliberate public API
# change and commit the changed PublicAPI.Unshipped.txt files with the change.
#
#   scripts/update-public-api.sh            # both libraries
#   scripts/update-public-api.sh --check    # only report whether the API files are up to date (exit 1 if not)
set -euo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
projects=(engine/PureMoE.Engine/PureMoE.Engine.csproj moe/PureMoE.Moe/PureMoE.Moe.csproj)

if [[ "${1:-}" == "--check" ]]; then
  for p in "${projects[@]}"; do
    dotnet format analyzers "$p" --diagnostics RS0016 RS0017 --severity warn --verify-no-changes -v q
  done
  echo "public API files are up to date"
  exit 0
fi

for p in "${projects[@]}"; do
  # The code fix adds new entries and removes stale ones; --severity warn makes the analyzers' warnings count.
  dotnet format analyzers "$p" --diagnostics RS0016 RS0017 --severity warn -v q
  # Keep the file sorted the way the analyzer writes it (first line "#nullable enable", then ordinal order), so
  # merges from concurrent branches conflict as little as possible.
  dir=$(dirname "$p")
  for f in "$dir/PublicAPI.Unshipped.txt"; do
    { echo '#nullable enable'; grep -v '^#nullable enable$' "$f" | grep -v '^[[:space:]]*$' | LC_ALL=C sort -u; } > "$f.tmp"
    mv "$f.tmp" "$f"
  done
done
dotnet build "${projects[1]}" -c Release -v q -nologo
echo "public API files updated: $(git diff --stat -- '*/PublicAPI.Unshipped.txt' | tail -1)"
