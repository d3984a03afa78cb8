#!/usr/bin/env bash
# Packs PureMoE.Engine and PureMoE.Moe (Release, with symbol packages) into a local folder feed, by default
# artifacts/feed/ (what examples/EmbedMoe/nuget.config points at). Usage: scripts/pack-local.sh [FEED_DIR] [extra
# dotnet pack arguments, e.g. -p:PureMoEVersion=0.1.1]
set -euo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
feed="${1:-artifacts/feed}"
shift || true
mkdir -p "$feed"
feed=$(cd "$feed" && pwd)
for p in engine/PureMoE.Engine/PureMoE.Engine.csproj moe/PureMoE.Moe/PureMoE.Moe.csproj; do
  dotnet pack "$p" -c Release -nologo -v q -o "$feed" "$@"
done
# A restore caches packages by id and version: drop stale copies of these two so the next restore takes the new ones.
global=$(dotnet nuget locals global-packages --list | sed 's/^global-packages: //')
rm -rf "$global/puremoe.engine" "$global/puremoe.moe"
ls -1 "$feed"
