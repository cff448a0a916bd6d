#!/usr/bin/env bash
# Packs the static `linea` binary and the shared libraries it links that the GPU machine lacks (OpenBLAS,
# libgfortran, libquadmath) into .device/linea.tar.xz for the device tool's carry (64 MiB in all: the stripped
# binary and OpenBLAS are about 100 MB unpacked, about 20 MB packed). On the GPU machine:
#   mkdir -p /tmp/d && python3 -c "import tarfile; tarfile.open('.device/linea.tar.xz').extractall('/tmp/d')"
#   LD_LIBRARY_PATH=/tmp/d/lib /tmp/d/linea verify --backend cuda --dtype bf16
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --static-swift-stdlib --product linea
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib" .device
strip -o "$stage/linea" .build/release/linea
for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
    path=$(ldd .build/release/linea | awk -v l="$lib" '$1 == l { print $3 }')
    if [ -z "$path" ]; then echo "pack_device: $lib is not linked by linea" >&2; exit 1; fi
    cp -L "$path" "$stage/lib/$lib"
    strip "$stage/lib/$lib" 2>/dev/null || true
done
tar -C "$stage" -cf - linea lib | xz -6 -T0 > .device/linea.tar.xz
echo "pack_device: .device/linea.tar.xz, $(du -h .device/linea.tar.xz | cut -f1)" >&2
