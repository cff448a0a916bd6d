#!/usr/bin/env bash
# Installs what Linea needs to build on Debian/Ubuntu: OpenBLAS (dense CPU GEMM) and pkg-config.
# Idempotent: does nothing when both are present.
set -euo pipefail
if pkg-config --exists openblas 2>/dev/null; then
    exit 0
fi
echo "setup: installing libopenblas-dev and pkg-config" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas-dev pkg-config >/dev/null
