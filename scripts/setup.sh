#!/usr/bin/env bash
# Installs what Linea needs to build on Debian/Ubuntu: OpenBLAS (dense CPU GEMM), FFTW 3 (long convolutions by FFT;
# its single-precision libfftw3f) and pkg-config. Idempotent: does nothing when all are present.
set -euo pipefail
missing=()
pkg-config --exists openblas 2>/dev/null || missing+=(libopenblas-dev)
pkg-config --exists fftw3f 2>/dev/null || missing+=(libfftw3-dev)
command -v pkg-config >/dev/null || missing+=(pkg-config)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "setup: installing ${missing[*]} and pkg-config" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" pkg-config >/dev/null
