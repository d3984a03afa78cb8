#!/usr/bin/env bash
# install-ptxas.sh: put NVIDIA's PTX assembler (ptxas, CUDA 11.8, from Debian's non-free nvidia-cuda-toolkit)
# and its disassembler (nvdisasm) under .tools/cuda/, so that the PTX tests can assemble the PTX ILGPU generates
# for sm_80/sm_90 and read the machine code on a machine without a GPU (tests/PureMoE.Engine.Tests/Ilgpu/IlgpuPtxTests.cs).
#
# Only those two binaries are extracted (they need nothing but libc); the toolkit is not installed, so the package's
# dependencies on the NVIDIA driver do not matter. Debian's non-free component is enabled in a private apt source
# list (.tools/apt/), not in the system's. Idempotent; prints the path of ptxas. Exits non-zero when the package
# cannot be fetched (the PTX assembly test then skips and says why).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.tools/cuda"
if [ -x "$dest/ptxas" ] && [ -x "$dest/nvdisasm" ] && "$dest/ptxas" --version >/dev/null 2>&1; then echo "$dest/ptxas"; exit 0; fi
command -v apt-get >/dev/null || { echo "install-ptxas: apt-get not found (Debian/Ubuntu only)" >&2; exit 1; }
apt="$root/.tools/apt"
mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$dest"
cat > "$apt/nonfree.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt" -o "Dir::State::Lists=$apt/lists"
      -o "Dir::Cache::Archives=$apt/archives" -o "APT::Sandbox::User=root" -qq)
apt-get "${opts[@]}" update >&2
(cd "$apt" && apt-get "${opts[@]}" download nvidia-cuda-toolkit >&2)
deb=$(ls "$apt"/nvidia-cuda-toolkit_*.deb | head -1)
tmp=$(mktemp -d)
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" ./usr/bin/ptxas ./usr/bin/nvdisasm
mv "$tmp/usr/bin/ptxas" "$tmp/usr/bin/nvdisasm" "$dest/"
rm -rf "$tmp" "$deb"
"$dest/ptxas" --version | tail -1 >&2
echo "$dest/ptxas"
