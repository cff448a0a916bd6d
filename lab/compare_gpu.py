#!/usr/bin/env python3
"""Side-by-side GPU timings: Linea's CUDA kernels (`linea bench --backend cuda --json`) against fla's chunk kernels and
PyTorch SDPA on the same shapes, in one run on one GPU. Prints ours/theirs ms and the throughput ratio theirs_ms/ours_ms
(>= 1.0 means Linea is at least as fast).

Shapes (as `linea bench --backend cuda`): bf16, B*T = --tokens, H = --heads, K = V = --dim, T in --lengths.
fla gets fla's layout [B,T,H,K] (l2-normalized keys for the delta rules, logsigmoid gates, sigmoid beta); SDPA gets
[B,H,T,D], causal. Timing: triton.testing.do_bench, median.
Usage: python3 lab/compare_gpu.py --linea path/to/linea [--lengths 2048,8192,32768]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
from triton.testing import do_bench


def fla_kernels():
    """name -> callable(inputs) for the fla chunk kernels that import."""
    table = {}
    try:
        from fla.ops.linear_attn import chunk_linear_attn
        table["linear_attn"] = lambda x: chunk_linear_attn(x["q"], x["k"], x["v"], normalize=False)
    except ImportError as e:
        print(f"compare_gpu: fla linear_attn unavailable: {e}", file=sys.stderr)
    from fla.ops.retention import chunk_retention
    from fla.ops.simple_gla import chunk_simple_gla
    from fla.ops.gla import chunk_gla
    from fla.ops.delta_rule import chunk_delta_rule
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    table["retention"] = lambda x: chunk_retention(x["q"], x["k"], x["v"])
    table["simple_gla"] = lambda x: chunk_simple_gla(x["q"], x["k"], x["v"], g=x["g"])
    table["gla"] = lambda x: chunk_gla(x["q"], x["k"], x["v"], g=x["gk"])
    table["delta_rule"] = lambda x: chunk_delta_rule(x["q"], x["kn"], x["v"], x["beta"])
    table["gated_delta_rule"] = lambda x: chunk_gated_delta_rule(x["q"], x["kn"], x["v"], x["g"], x["beta"])
    try:
        from fla.ops.kda import chunk_kda
        table["kda"] = lambda x: chunk_kda(x["q"], x["kn"], x["v"], x["gk"], x["beta"])
    except ImportError as e:
        print(f"compare_gpu: fla kda unavailable: {e}", file=sys.stderr)
    return table


NAMES = ["attention", "linear_attn", "retention", "simple_gla", "gla", "delta_rule", "gated_delta_rule", "kda"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--linea", required=True, help="path of the linea binary")
    p.add_argument("--lengths", default="2048,8192,32768")
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--skip-linea", action="store_true", help="time only fla and SDPA")
    p.add_argument("--only", default=None, help="comma-separated mechanisms to time (default: all that have a counterpart here)")
    a = p.parse_args()
    lengths = [int(t) for t in a.lengths.split(",")]
    H, D = a.heads, a.dim
    dev = torch.device("cuda")
    theirs = {}  # (mechanism, T) -> (kernel name, ms)
    # Only what has a counterpart here: `linea bench` alone would also time every other family (minutes more).
    only = a.only.split(",") if a.only else NAMES
    kernels = {n: f for n, f in fla_kernels().items() if n in only}
    ours = {}
    if not a.skip_linea:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "linea.json")
            cmd = [a.linea, "bench", "--backend", "cuda", "--json", path, "--lengths", a.lengths,
                   "--tokens", str(a.tokens), "--heads", str(H), "--dim", str(D)] + ["--mechanism", ",".join(only)]
            print("compare_gpu: " + " ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, check=True, stdout=sys.stderr)
            with open(path) as f:
                for r in json.load(f):
                    ours[(r["mechanism"], r["T"])] = r["ms"]

    def report(name, T, ms):  # one line per timing as it comes, before the table
        oms = ours.get((name, T))
        print(f"compare_gpu: {name} T={T}: theirs {ms:.3f} ms, ours " + (f"{oms:.3f} ms, {ms / oms:.2f}x" if oms else "n/a"),
              file=sys.stderr, flush=True)

    torch.manual_seed(0)
    with torch.no_grad():
        for T in lengths:
            B = max(1, a.tokens // T)
            x = {
                "q": torch.randn(B, T, H, D, device=dev, dtype=torch.bfloat16),
                "k": torch.randn(B, T, H, D, device=dev, dtype=torch.bfloat16),
                "v": torch.randn(B, T, H, D, device=dev, dtype=torch.bfloat16),
                "g": F.logsigmoid(torch.randn(B, T, H, device=dev, dtype=torch.float32)),
                "gk": F.logsigmoid(torch.randn(B, T, H, D, device=dev, dtype=torch.float32)),
                "beta": torch.rand(B, T, H, device=dev, dtype=torch.float32).sigmoid(),
            }
            x["kn"] = F.normalize(x["k"].float(), p=2, dim=-1).to(torch.bfloat16)
            for name, fn in kernels.items():
                try:
                    ms = do_bench(lambda: fn(x), warmup=25, rep=100, return_mode="median")
                    theirs[(name, T)] = (f"fla chunk_{name}", ms)
                    report(name, T, ms)
                except Exception as e:  # an fla kernel that fails on this GPU/shape is reported, not fatal
                    print(f"compare_gpu: fla {name} T={T} failed: {e}", file=sys.stderr)
            qs, ks, vs = (x[n].transpose(1, 2).contiguous() for n in ("q", "k", "v"))
            if "attention" in only:
                ms = do_bench(lambda: F.scaled_dot_product_attention(qs, ks, vs, is_causal=True), warmup=25, rep=100,
                              return_mode="median")
                theirs[("attention", T)] = ("torch SDPA causal", ms)
                report("attention", T, ms)
            print(f"compare_gpu: T={T} B={B} done (fla + SDPA)", file=sys.stderr)
            del x, qs, ks, vs
            torch.cuda.empty_cache()

    rows = [("mechanism", "T", "B", "ours ms", "theirs ms", "theirs", "ours/theirs throughput")]
    for name in NAMES:
        for T in lengths:
            if (name, T) not in theirs and (name, T) not in ours:
                continue
            kernel, tms = theirs.get((name, T), ("-", None))
            oms = ours.get((name, T))
            ratio = f"{tms / oms:.2f}x" if (tms and oms) else "n/a"
            rows.append((name, str(T), str(max(1, a.tokens // T)), f"{oms:.3f}" if oms else "n/a",
                         f"{tms:.3f}" if tms else "n/a", kernel, ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"{torch.cuda.get_device_name()}, bf16, H={H}, K=V={D}, B*T={a.tokens}; medians; "
          f"ratio = theirs_ms / ours_ms (>= 1.0: Linea at least as fast)")


if __name__ == "__main__":
    main()
