#!/usr/bin/env bash
# On the GPU machine, from the repository root (the device tool, carry [".device", ".whl"]): the model runtime on cuda.
# Unpacks .device/linea.tar.xz (scripts/pack_device.sh), seeds the kernel cache from .device/cache.tar when present (a
# previous call's $OUT/cache.tar: NVRTC compiles cost minutes on a fresh machine; written back there at the end), installs fla's wheels
# from .whl, then: the parity fixtures through `linea logits/generate --device cuda` (f32 weights, then bf16 weights
# against transformers' bf16 on cuda), the demo, and lab/compare_gpu_models.py (issue 17's GPU speed; batches from
# $BATCHES, default 1,16) until $DEADLINE seconds (default 540) after the start. Outputs to stdout and $OUT.
set -u
cd "$(dirname "$0")/.."
start=$(date +%s)
out=${OUT:-/tmp/linea-device}
export LINEA_CUDA_CACHE=/tmp/linea-cache
mkdir -p /tmp/linea-d "$LINEA_CUDA_CACHE"
[ -f .device/cache.tar ] && tar -C "$LINEA_CUDA_CACHE" -xf .device/cache.tar
trap 'tar -C "$LINEA_CUDA_CACHE" -cf "$out/cache.tar" .' EXIT
python3 -c "import tarfile; tarfile.open('.device/linea.tar.xz').extractall('/tmp/linea-d')" || { echo "device_models: no .device/linea.tar.xz" >&2; exit 1; }
export LD_LIBRARY_PATH=/tmp/linea-d/lib
L=/tmp/linea-d/linea
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/linea-site .whl/*.whl && export PYTHONPATH=/tmp/linea-site
fi
elapsed() { echo "($(( $(date +%s) - start )) s)"; }
nvidia-smi --query-gpu=name --format=csv,noheader
echo "== fixtures, f32 weights $(elapsed)"
timeout 150 python3 lab/check_models_device.py --linea $L --device cuda 2>&1 | cut -c1-220
echo "== fixtures, bf16 weights against transformers bf16 $(elapsed)"
timeout 200 python3 lab/check_models_device.py --linea $L --device cuda --bf16 2>&1 | grep -v "Loading\|^\[trans\|warn\|recommend\|fast path\|CUDA backend" | cut -c1-220
echo "== demo $(elapsed)"
timeout 30 $L generate --device cuda --max-tokens 24 2>&1 | tail -2
echo "== compare_gpu_models $(elapsed)"
timeout $(( ${DEADLINE:-540} - $(date +%s) + start )) python3 lab/compare_gpu_models.py --linea $L --batches "${BATCHES:-1,16}" \
    --prompt-tokens 512 --new-tokens 32 2> "$out/compare_models.err" | tee "$out/compare_models.txt"
tail -3 "$out/compare_models.err" | cut -c1-300
echo "== end $(elapsed)"
