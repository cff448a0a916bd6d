#!/usr/bin/env bash
# Packs the static `linea` binary and the shared libraries it links that the GPU machine lacks (OpenBLAS,
# libgfortran, libquadmath) into .device/linea.tar.xz for the device tool's carry (64 MiB in all: the stripped
# binary and OpenBLAS are about 100 MB unpacked, about 20 MB packed). With --tests, also the release test binary
# and the Swift runtime libraries it links into .device/tests.tar.xz (about 17 MB). scripts/device_check.sh unpacks
# and runs both on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --static-swift-stdlib --product linea
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/linea/lib" "$stage/tests/lib" .device
strip -o "$stage/linea/linea" .build/release/linea
for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
    path=$(ldd .build/release/linea | awk -v l="$lib" '$1 == l { print $3 }')
    if [ -z "$path" ]; then echo "pack_device: $lib is not linked by linea" >&2; exit 1; fi
    cp -L "$path" "$stage/linea/lib/$lib"
    strip "$stage/linea/lib/$lib" 2>/dev/null || true
done
tar -C "$stage/linea" -cf - linea lib | xz -6 -T0 > .device/linea.tar.xz
echo "pack_device: .device/linea.tar.xz, $(du -h .device/linea.tar.xz | cut -f1)" >&2
if [ "${1:-}" = "--tests" ]; then
    swift build -c release --build-tests
    binary=.build/release/LineaPackageTests.xctest
    strip -o "$stage/tests/LineaPackageTests.xctest" "$binary"
    for path in $(ldd "$binary" | awk '$3 ~ /\/swift\/linux\// { print $3 }'); do cp -L "$path" "$stage/tests/lib/"; done
    strip "$stage"/tests/lib/*.so 2>/dev/null || true
    tar -C "$stage/tests" -cf - . | xz -6 -T0 > .device/tests.tar.xz
    echo "pack_device: .device/tests.tar.xz, $(du -h .device/tests.tar.xz | cut -f1)" >&2
fi
