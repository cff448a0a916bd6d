#!/usr/bin/env python3
"""GPU matrix multiply beside torch.matmul, in one run on one GPU: `linea bench --backend cuda --matmul --dtype D` (Ops.matmul,
cuBLAS, nn.Linear layout, CUDA-event medians with L2 evicted before each run) and torch.matmul(x, w.T) on the same shapes
timed with triton.testing.do_bench (which also evicts L2). Prints ms and the ratio theirs/ours (>= 1.0: Linea at least
as fast). Usage: compare_matmul.py --linea PATH [--dtype bf16]"""
import argparse
import subprocess

import torch
import triton.testing


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--linea", required=True)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    a = p.parse_args()
    out = subprocess.run([a.linea, "bench", "--backend", "cuda", "--matmul", "--dtype", a.dtype],
                         check=True, capture_output=True, text=True).stdout
    ours = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit():
            ours[(int(parts[0]), int(parts[1]), int(parts[2]))] = float(parts[3])
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[a.dtype]
    torch.backends.cuda.matmul.allow_tf32 = False  # Linea's f32 path computes in fp32
    print(f"{torch.cuda.get_device_name()}, {a.dtype}")
    print(f"{'M':>5} {'K':>5} {'N':>5} {'ours ms':>9} {'torch ms':>9} {'ratio':>6}")
    for (m, k, n), ms in ours.items():
        x = torch.randn(m, k, device="cuda", dtype=dtype)
        w = torch.randn(n, k, device="cuda", dtype=dtype) * 0.02
        theirs = triton.testing.do_bench(lambda: torch.matmul(x, w.T), warmup=25, rep=200)
        print(f"{m:>5} {k:>5} {n:>5} {ms:>9.4f} {theirs:>9.4f} {theirs / ms:>5.2f}x")


if __name__ == "__main__":
    main()
