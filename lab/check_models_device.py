"""The model runtime on a device, against the parity fixtures that transformers wrote.

For each folder under Tests/LineaLMTests/Fixtures/models: `linea logits --device DEVICE` on the 48-token input,
rel-RMS against transformers' logits, and `linea generate --input-ids ... --max-tokens 16 --device DEVICE` against
transformers' greedy continuation. Prints one line per model; exits non-zero when a model fails.

With --bf16 (needs torch with a GPU and transformers): the fixture's weights rounded to bf16 into a scratch folder,
transformers run in bf16 on cuda as the reference (full forwards, greedy by full forwards, each step's top-2 gap),
Linea on the same bf16 weights; the logits must be within the tolerance of transformers' bf16 ones or at least as
close to the f32 logits as those (both round), and the greedy tokens must match transformers' bf16 ones up to the first
step whose top-2 gap is below --gap (bf16 rounding can flip such a step, and every later token with it), or the f32
reference's tokens.

    python3 lab/check_models_device.py --linea PATH [--device cuda] [--tolerance 1e-4] [--bf16 [--gap 0.05]] [--only a,b]
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


def rel_rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / max(np.sqrt(np.mean(b ** 2)), 1e-30))


def sdpa_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), **kwargs):
    """flash_attn_func as fla's attention layers call it ([B, T, H, D], grouped key/value heads, the causal mask
    aligned bottom-right, window_size = (left, right) with -1 unbounded), by torch's scaled_dot_product_attention
    in the inputs' dtype: the bf16 reference's attention layers without the flash-attn package."""
    import torch
    if dropout_p or kwargs.get("alibi_slopes") is not None or kwargs.get("softcap"):
        raise NotImplementedError("dropout, alibi_slopes and softcap are not replaced")
    Tq, Tk = q.shape[1], k.shape[1]
    i = torch.arange(Tq, device=q.device)[:, None] + (Tk - Tq)
    j = torch.arange(Tk, device=q.device)[None, :]
    left, right = window_size
    right = 0 if causal else right
    allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device)
    if right >= 0:
        allowed &= j <= i + right
    if left >= 0:
        allowed &= j >= i - left
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=allowed, scale=softmax_scale,
        enable_gqa=k.shape[2] != q.shape[2])
    return out.transpose(1, 2)


def bf16_reference(folder, expected, out, device):
    """The fixture with bf16 weights in `out`, and transformers' bf16 logits and greedy tokens on `device`."""
    import shutil
    import torch
    from safetensors.torch import load_file as load_torch, save_file as save_torch
    from transformers import AutoModelForCausalLM
    try:
        import fla  # noqa: F401  (registers fla's model types with transformers' Auto classes)
        import fla.layers.attn
        if getattr(fla.layers.attn, "flash_attn_func", None) is None:  # flash-attn is not on the GPU machine
            fla.layers.attn.flash_attn_func = sdpa_flash_attn_func
    except ImportError:
        pass
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns("expected.safetensors", "*.safetensors"))
    for file in os.listdir(folder):
        if file.endswith(".safetensors") and file != "expected.safetensors":
            tensors = load_torch(os.path.join(folder, file))
            save_torch({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()}, os.path.join(out, file))
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).to(device).eval()
    ids = torch.from_numpy(expected["input_ids_48"]).to(device)
    result = {"input_ids_48": expected["input_ids_48"]}
    import contextlib
    # Some torch fallbacks (transformers' and fla's Mamba layers without their CUDA kernels) keep a float32 residual
    # that meets a bf16 projection: such a model runs under autocast to bf16, as its users would run it.
    precision = contextlib.nullcontext
    with torch.inference_mode():
        try:
            logits = model(ids, use_cache=False).logits
        except RuntimeError as error:
            if "dtype" not in str(error):
                raise
            precision = lambda: torch.autocast("cuda", dtype=torch.bfloat16)
            with precision():
                logits = model(ids, use_cache=False).logits
        result["logits_48"] = logits.float().cpu().numpy()
        tokens, gaps = ids, []
        for _ in range(16):
            with precision():
                last = model(tokens, use_cache=False).logits[0, -1].float()
            top = torch.topk(last, 2).values
            gaps.append(float(top[0] - top[1]))
            tokens = torch.cat([tokens, last.argmax().view(1, 1)], dim=1)
    result["greedy_48"] = tokens[:, ids.shape[1]:].cpu().numpy()
    result["top2_gap_48"] = np.array(gaps, dtype=np.float32)
    return out, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--linea", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tolerance", type=float, default=None, help="largest rel-RMS of the logits (1e-4; 2e-2 with --bf16)")
    parser.add_argument("--bf16", action="store_true", help="bf16 weights and compute against transformers in bf16 on cuda")
    parser.add_argument("--gap", type=float, default=0.05, help="--bf16: greedy steps must agree while the reference's top-2 gap exceeds this")
    parser.add_argument("--only", default=None, help="comma-separated fixture names (default: all)")
    args = parser.parse_args()
    args.tolerance = args.tolerance or (2e-2 if args.bf16 else 1e-4)
    failed = 0
    with tempfile.TemporaryDirectory() as scratch:
        for name in sorted(os.listdir(FIXTURES)):
            if args.only and name not in args.only.split(","):
                continue
            folder = os.path.join(FIXTURES, name)
            expected = load_file(os.path.join(folder, "expected.safetensors"))
            truth = expected["logits_48"].astype(np.float64)  # f32 weights, transformers on the CPU
            f32_expected = expected
            if args.bf16:
                try:
                    folder, expected = bf16_reference(folder, expected, os.path.join(scratch, name), args.device)
                except Exception as error:  # a model type this transformers lacks
                    print(f"{name:18} no bf16 reference: {str(error)[-200:]}")
                    continue
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
            rel = rel_rms(ours, theirs)
            run = subprocess.run([args.linea, "generate", "--model", folder, "--device", args.device, "--input-ids",
                                  ",".join(str(int(i)) for i in ids[0]), "--max-tokens", "16", "--ignore-eos"], capture_output=True, text=True)
            greedy = [int(t) for t in run.stdout.split()] if run.returncode == 0 else None
            reference = [int(t) for t in expected["greedy_48"][0]]
            if args.bf16 and greedy is not None:
                # Compare up to the first step the rounding may flip (reference top-2 gap below --gap), that step included;
                # against transformers' bf16 tokens, or the f32 reference's (the truth both bf16 runs round away from).
                def agrees(ref):
                    close = [i for i, g in enumerate(ref.get("top2_gap_48", [])) if g < args.gap]
                    upto = close[0] + 1 if close else 16
                    return greedy[:upto] == [int(t) for t in ref["greedy_48"][0]][:upto]
                same = agrees(expected) or agrees(f32_expected)
            else:
                same = greedy == reference
            # bf16: within the tolerance of transformers' bf16 logits, or at least as close to the f32 truth as they are
            # (both round; neither is the truth).
            close_to_truth = args.bf16 and rel_rms(ours, truth) <= 1.25 * rel_rms(theirs, truth)
            ok = (rel <= args.tolerance or close_to_truth) and same
            failed += 0 if ok else 1
            speed = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
            against_f32 = f"  (vs f32: linea {rel_rms(ours, truth):.2e}, transformers bf16 {rel_rms(theirs, truth):.2e})" if args.bf16 else ""
            print(f"{name:18} logits rel-RMS {rel:.2e}{against_f32}  greedy {'identical' if same else f'DIFFERS {greedy}'}  "
                  f"{'ok' if ok else 'FAILED'}  ({speed})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
