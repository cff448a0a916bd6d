"""The model runtime on a device, against the parity fixtures that transformers wrote.

For each folder under Tests/LineaLMTests/Fixtures/models: `linea logits --device DEVICE` on the 48-token input,
rel-RMS against transformers' logits, and `linea generate --input-ids ... --max-tokens 16 --device DEVICE` against
transformers' greedy continuation. Prints one line per model; exits non-zero when a model fails.

    python3 lab/check_models_device.py --linea PATH [--device cuda] [--tolerance 1e-4]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "Tests/LineaLMTests/Fixtures/models")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--linea", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest rel-RMS of the logits")
    args = parser.parse_args()
    failed = 0
    with tempfile.TemporaryDirectory() as scratch:
        for name in sorted(os.listdir(FIXTURES)):
            folder = os.path.join(FIXTURES, name)
            expected = load_file(os.path.join(folder, "expected.safetensors"))
            ids = expected["input_ids_48"]
            inputs, output = os.path.join(scratch, "in.safetensors"), os.path.join(scratch, "out.safetensors")
            save_file({"input_ids": ids}, inputs)
            run = subprocess.run([args.linea, "logits", "--model", folder, "--device", args.device, "--inputs", inputs,
                                  "--output", output], capture_output=True, text=True)
            if run.returncode != 0 and "model_type: expected one of" in run.stderr:
                print(f"{name:18} not supported by this binary (model_type)")
                continue
            if run.returncode != 0:
                print(f"{name:18} logits FAILED: {run.stderr.strip()[-400:]}")
                failed += 1
                continue
            ours, theirs = load_file(output)["logits"].astype(np.float64), expected["logits_48"].astype(np.float64)
            rel = float(np.sqrt(np.mean((ours - theirs) ** 2)) / max(np.sqrt(np.mean(theirs ** 2)), 1e-30))
            run = subprocess.run([args.linea, "generate", "--model", folder, "--device", args.device, "--input-ids",
                                  ",".join(str(int(i)) for i in ids[0]), "--max-tokens", "16", "--ignore-eos"], capture_output=True, text=True)
            greedy = [int(t) for t in run.stdout.split()] if run.returncode == 0 else None
            same = greedy == [int(t) for t in expected["greedy_48"][0]]
            ok = rel <= args.tolerance and same
            failed += 0 if ok else 1
            speed = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
            print(f"{name:18} logits rel-RMS {rel:.2e}  greedy {'identical' if same else f'DIFFERS {greedy}'}  "
                  f"{'ok' if ok else 'FAILED'}  ({speed})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
