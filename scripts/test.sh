#!/usr/bin/env bash
# Runs Linea's test suite (release build: the numeric tests are fast there). Installs dependencies first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift test -c release "$@"
