#!/usr/bin/env bash
# On the GPU machine, from the repository root (the device tool, carry [".device", ".whl"]): the model runtime on cuda.
# Unpacks .device/linea.tar.xz (scripts/pack_device.sh), seeds the kernel cache from .device/cache.tar when present (a
# previous call's $OUT/cache.tar: NVRTC compiles cost minutes on a fresh machine; written back there at the end), installs fla's wheels
# from .whl, then: the parity fixtures through `linea logits/generate --device cuda` (f32 weights, then bf16 weights
# against transformers' bf16 on cuda), the demo, `linea bench --profile` of a 1B qwen3_5_text, and lab/compare_gpu_models.py
# (issue 17's GPU speed; model types from $TYPES, default "qwen3_5_text mamba2 llama"; batches from $BATCHES, default 1,16)
# until $DEADLINE seconds (default 540) after the start. Outputs to stdout and $OUT.
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
# Where a 1B model's time goes on the GPU (bench --profile: each op, allocation and copy; the full tables to $out).
C=/tmp/linea-gpu-models/qwen3_5_text-1B
[ -f $C/config.json ] || $L model init --type qwen3_5_text --size 1B --dtype bf16 --vocab 50257 --output $C 2>&1 | tail -1
echo "== bench --profile qwen3_5_text $(elapsed)"
timeout 100 $L bench --model $C --device cuda --prompt-tokens 512 --new-tokens 32 --profile > "$out/profile_qwen3_5_text.txt" 2>&1
grep -A12 "^profile\|^model" "$out/profile_qwen3_5_text.txt" | cut -c1-160
for T in ${TYPES:-qwen3_5_text mamba2 llama}; do
    echo "== compare_gpu_models $T $(elapsed)"
    timeout $(( ${DEADLINE:-540} - $(date +%s) + start )) python3 lab/compare_gpu_models.py --linea $L --type $T --batches "${BATCHES:-1,16}" \
        --prompt-tokens 512 --new-tokens 32 2> "$out/compare_$T.err" | tee "$out/compare_$T.txt"
    tail -3 "$out/compare_$T.err" | cut -c1-300
done
echo "== end $(elapsed)"
