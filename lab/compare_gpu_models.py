#!/usr/bin/env python3
"""GPU speed of Linea's model runtime against Hugging Face transformers (with fla's kernels when installed) on the
same checkpoint (issue 17, "What it must show": GPU speed side by side).

1. `linea model init --type T --size S --dtype bf16 --vocab 50257 --output WORK/T` (random weights).
2. For each batch B and prompt length P: transformers on cuda (bf16) - prefill = one forward of B x P random ids with
   the cache on (median of --reps after a warm-up), decode = generate(N new tokens, greedy, eos off) timed per step by
   a logits processor that synchronizes: (N - 1) / (time of step N - time of step 1), tokens/s counting every sequence.
3. `linea bench --model WORK/T --device cuda --batch B --prompt-tokens P --new-tokens N`.
Prints one table (Linea / transformers ratios).

    python3 lab/compare_gpu_models.py --linea PATH [--type qwen3_5_text] [--size 1B] [--batches 1,16]
        [--prompt-tokens 512] [--new-tokens 64]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def bench_linea(linea, ckpt, batch, prompts, new):
    out = subprocess.run([linea, "bench", "--model", ckpt, "--device", "cuda", "--batch", str(batch), "--prompt-tokens",
                          ",".join(map(str, prompts)), "--new-tokens", str(new)], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip()[-300:])
    res = {}
    for line in out.stdout.splitlines():
        cols = line.split()
        # model  B  prompt  prefill tokens/s  new  decode tokens/s  peak extra
        if len(cols) >= 6 and cols[1].isdigit() and cols[2].isdigit():
            res[int(cols[2])] = (float(cols[3]), float(cols[5]))
    return res


def bench_transformers(ckpt, batch, prompts, new, reps):
    import torch
    from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16).cuda().eval()
    vocab = model.config.vocab_size

    class Stamp(LogitsProcessor):
        def __init__(self):
            self.t = []

        def __call__(self, input_ids, scores):
            torch.cuda.synchronize()
            self.t.append(time.perf_counter())
            return scores

    res = {}
    import contextlib
    # transformers' and fla's Mamba layers without their CUDA kernels keep a float32 residual that meets a bf16
    # projection: such a model runs under autocast to bf16, as its users would have to.
    precision = contextlib.nullcontext
    try:
        with torch.inference_mode():
            model(torch.zeros((1, 8), dtype=torch.long, device="cuda"), use_cache=True, logits_to_keep=1)
    except RuntimeError as error:
        if "dtype" not in str(error):
            raise
        precision = lambda: torch.autocast("cuda", dtype=torch.bfloat16)
        log("transformers: under autocast to bf16 (" + str(error)[:80] + ")")
    with torch.inference_mode(), precision():
        for P in prompts:
            ids = torch.randint(0, vocab, (batch, P), device="cuda")
            times = []
            for _ in range(reps + 1):
                torch.cuda.synchronize()
                t = time.perf_counter()
                model(ids, use_cache=True, logits_to_keep=1)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            prefill = batch * P / statistics.median(times[1:])
            rates = []
            for _ in range(2):
                stamp = Stamp()
                model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                               eos_token_id=None, pad_token_id=0, use_cache=True, logits_processor=LogitsProcessorList([stamp]))
                rates.append(batch * (len(stamp.t) - 1) / (stamp.t[-1] - stamp.t[0]))
            res[P] = (prefill, rates[-1])
            log(f"transformers B={batch} P={P}: {res[P]}")
    del model
    torch.cuda.empty_cache()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--linea", required=True)
    ap.add_argument("--type", default="qwen3_5_text")
    ap.add_argument("--size", default="1B")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--prompt-tokens", default="512")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--work", default="/tmp/linea-gpu-models")
    a = ap.parse_args()
    prompts = [int(p) for p in a.prompt_tokens.split(",")]
    ckpt = os.path.join(a.work, f"{a.type}-{a.size}")
    if not os.path.exists(os.path.join(ckpt, "config.json")):
        subprocess.run([a.linea, "model", "init", "--type", a.type, "--size", a.size, "--dtype", "bf16", "--vocab", "50257",
                        "--output", ckpt], check=True)
    import torch
    import transformers
    try:
        import fla
        fla_version = fla.__version__
    except ImportError:
        fla_version = "not installed (torch fallbacks)"
    config = json.load(open(os.path.join(ckpt, "config.json")))
    print(f"# {torch.cuda.get_device_name()}; {a.type} {a.size} bf16 (hidden {config.get('hidden_size')}, "
          f"{config.get('num_hidden_layers')} layers); torch {torch.__version__}, transformers {transformers.__version__}, "
          f"fla {fla_version}; {a.new_tokens} new tokens; tokens/s count every sequence of the batch")
    header = ("B", "prompt", "prefill linea", "transformers", "ratio", "decode linea", "transformers", "ratio")
    print("  ".join(f"{h:>13}" for h in header), flush=True)
    # Each batch's rows as soon as they are measured (a caller's time limit keeps what came before it).
    for batch in [int(b) for b in a.batches.split(",")]:
        ours = bench_linea(a.linea, ckpt, batch, prompts, a.new_tokens)
        log(f"linea B={batch}: {ours}")
        theirs = bench_transformers(ckpt, batch, prompts, a.new_tokens, a.reps)
        for P in prompts:
            (lp, ld), (tp, td) = ours[P], theirs[P]
            print("  ".join(f"{v:>13}" for v in (batch, P, f"{lp:.0f}", f"{tp:.0f}", f"{lp / tp:.2f}x", f"{ld:.1f}", f"{td:.1f}",
                                                   f"{ld / td:.2f}x")), flush=True)


if __name__ == "__main__":
    main()
