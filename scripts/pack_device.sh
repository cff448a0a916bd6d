#!/usr/bin/env bash
# Packs the static `linea` binary and the shared libraries it needs that the GPU machine lacks (OpenBLAS, which it
# loads with dlopen from lib/ beside itself, and OpenBLAS's libgfortran and libquadmath; FFTW's libfftw3f, which it
# links: the device scripts put lib/ on LD_LIBRARY_PATH) into .device/linea.tar.xz
# for the device tool's carry (64 MiB in all: the stripped binary and OpenBLAS are about 100 MB unpacked, about 20 MB packed). With --tests, also the release test binary
# with the Swift runtime libraries it links, linea's libraries above and scripts/stacks.c (built static) into
# .device/tests.tar.xz (about 25 MB; it runs without linea.tar.xz, so that a test-only call carries less); the
# unstripped test binary stays here in .device/symbols/, for scripts/symbolize_stacks.py.
# scripts/device_check.sh unpacks and runs both on the GPU machine; scripts/device_models.sh runs the model runtime there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The static build has its own scratch folder: sharing .build with the tests' build would rebuild everything twice.
swift build -c release --static-swift-stdlib --product linea --scratch-path .build-static
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/linea/lib" "$stage/tests/lib" .device
strip -o "$stage/linea/linea" .build-static/release/linea
# linea loads OpenBLAS with dlopen (from lib/ beside the binary first); the libraries OpenBLAS itself links come along.
openblas=$(ldconfig -p | awk '$1 == "libopenblas.so.0" { print $NF; exit }')
if [ -z "$openblas" ]; then echo "pack_device: libopenblas.so.0 not found (ldconfig -p)" >&2; exit 1; fi
cp -L "$openblas" "$stage/linea/lib/libopenblas.so.0"
for lib in libgfortran.so.5 libquadmath.so.0; do
    path=$(ldd "$openblas" | awk -v l="$lib" '$1 == l { print $3 }')
    if [ -z "$path" ]; then echo "pack_device: $lib is not linked by $openblas" >&2; exit 1; fi
    cp -L "$path" "$stage/linea/lib/$lib"
done
# linea links libfftw3f.so.3 (long convolutions by FFT); it depends on libc and libm only.
fftw=$(ldd .build-static/release/linea | awk '$1 == "libfftw3f.so.3" { print $3 }')
if [ -z "$fftw" ]; then echo "pack_device: libfftw3f.so.3 is not linked by .build-static/release/linea (ldd)" >&2; exit 1; fi
cp -L "$fftw" "$stage/linea/lib/libfftw3f.so.3"
strip "$stage"/linea/lib/*.so* 2>/dev/null || true
tar -C "$stage/linea" -cf - linea lib | xz -9e -T0 > "$stage/linea.tar.xz"
mv "$stage/linea.tar.xz" .device/linea.tar.xz  # whole or not at all for a device call that copies .device meanwhile
echo "pack_device: .device/linea.tar.xz, $(du -h .device/linea.tar.xz | cut -f1)" >&2
if [ "${1:-}" = "--tests" ]; then
    swift build -c release --build-tests
    binary=.build/release/LineaPackageTests.xctest
    strip -o "$stage/tests/LineaPackageTests.xctest" "$binary"
    for path in $(ldd "$binary" | awk '$3 ~ /\/swift\/linux\// { print $3 }'); do cp -L "$path" "$stage/tests/lib/"; done
    strip "$stage"/tests/lib/*.so 2>/dev/null || true
    cp "$stage"/linea/lib/* "$stage/tests/lib/"
    # Every thread's stack of a stalled run, on a host without gdb (device_check.sh takes it at TESTS_LIMIT).
    gcc -O1 -static -o "$stage/tests/stacks" scripts/stacks.c
    mkdir -p .device/symbols && cp "$binary" .device/symbols/
    tar -C "$stage/tests" -cf - . | xz -9e -T0 > "$stage/tests.tar.xz"
    mv "$stage/tests.tar.xz" .device/tests.tar.xz
    echo "pack_device: .device/tests.tar.xz, $(du -h .device/tests.tar.xz | cut -f1)" >&2
fi
