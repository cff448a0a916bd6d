#!/usr/bin/env python3
"""Neighborhood attention on one GPU: Linea's CUDA kernel (`linea bench --backend cuda --mechanism neighborhood --json`)
against PyTorch SDPA with a dense boolean neighborhood mask (NATTEN's rules, built here) and, when it imports, NATTEN's
own na2d. Prints each time and the ratio SDPA_ms / Linea_ms (the target on an H100: >= 3 at the default point).

Default point (the issue's): a 2-D grid of 64 x 64 tokens, kernel 13 x 13, 8 heads, D = 64, B = 1, bf16. `linea bench`
times neighborhood on a square grid of side floor(sqrt(T)) with kernel min(13, side), so --side sets T = side^2 and
--kernel must stay 13 for the Linea column (other kernels time only SDPA and NATTEN).

Linea is timed twice: LINEA_NATTEN_KERNEL=auto (the tensor-core kernel for bf16, D in {64, 128}) and =portable (the
fp32 CUDA-core kernel). Before timing, --check compares Linea's output (`linea op neighborhood --backend cuda`, f32 inputs, through safetensors
files; needs the safetensors package) and NATTEN's (if present) against the masked SDPA in fp32, which validates the
mask this script builds as well as the kernel.

NATTEN (pip `natten`) is not in this repository's requirements and will usually not be installed on the GPU machine
(its wheels are built per torch/CUDA version; nothing is fetched from there): its column is then "n/a".
Timing: triton.testing.do_bench (median) when triton imports, else CUDA events (median of 20 after 5 warm-ups).
Usage: python3 lab/compare_neighborhood_gpu.py --linea .build/release/linea [--side 64] [--heads 8] [--dim 64] [--check]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F


def axis_windows(L, k, s=1, d=1, causal=False):
    """Per coordinate x in [0, L): (group, start, end) of its keys in group coordinates (NATTEN's rules, as Linea's
    NeighborhoodOptions documents them): group g = x % d of length n = ceil((L - g) / d); non-causal: the stride
    group's middle query leads and the window of k keys is shifted to stay inside [0, n); causal: the stride group's
    last query leads, keys [max(leader - k + 1, 0), x]."""
    out = []
    for x in range(L):
        g, xi = x % d, x // d
        n = (L - g + d - 1) // d
        if causal:
            leader = min(xi // s * s + s - 1, n - 1)
            out.append((g, max(leader - k + 1, 0), xi + 1))
        else:
            leader = min(xi // s * s + s // 2, n - 1)
            start = min(max(leader - k // 2, 0), n - k)
            out.append((g, start, start + k))
    return out


def neighborhood_mask(spatial, kernel, stride=None, dilation=None, causal=None, device="cuda"):
    """Bool [N, N] (True: query i sees key j) for a row-major grid `spatial`, one kernel/stride/dilation/causal per axis."""
    r = len(spatial)
    stride, dilation, causal = stride or [1] * r, dilation or [1] * r, causal or [False] * r
    mask = torch.ones((1, 1), dtype=torch.bool, device=device)
    for a in range(r):
        L, d = spatial[a], dilation[a]
        w = torch.tensor(axis_windows(L, kernel[a], stride[a], d, causal[a]), device=device)  # [L, 3]
        y = torch.arange(L, device=device)
        yg, yi = y % d, y // d
        ax = (w[:, 0:1] == yg[None, :]) & (w[:, 1:2] <= yi[None, :]) & (yi[None, :] < w[:, 2:3])  # [L, L]
        # Row-major flattening: the new axis varies fastest.
        mask = (mask[:, None, :, None] & ax[None, :, None, :]).reshape(mask.shape[0] * L, mask.shape[1] * L)
    return mask


def timer():
    try:
        from triton.testing import do_bench
        return lambda f: do_bench(f, return_mode="median")
    except ImportError:
        def bench(f):
            for _ in range(5):
                f()
            times = []
            for _ in range(20):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                f()
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b))
            return sorted(times)[len(times) // 2]
        return bench


def natten_na2d():
    """NATTEN's 2-D neighborhood attention ([B, X, Y, H, D] in and out), or None when it does not import."""
    try:
        import natten
    except ImportError as e:
        print(f"compare_neighborhood_gpu: natten unavailable ({e}); its column is n/a", file=sys.stderr)
        return None
    if hasattr(natten, "na2d"):
        return lambda q, k, v, kernel: natten.na2d(q, k, v, kernel_size=kernel)
    from natten.functional import na2d  # older releases
    return lambda q, k, v, kernel: na2d(q, k, v, kernel_size=kernel)


def linea_bench(linea, side, B, H, D, kernel="auto"):
    """Linea's median ms at the bench's neighborhood point (2-D side x side, kernel 13), bf16, with LINEA_NATTEN_KERNEL =
    `kernel` (auto: tensor cores where they fit; portable: the fp32 CUDA-core kernel)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "linea.json")
        cmd = [linea, "bench", "--backend", "cuda", "--mechanism", "neighborhood", "--lengths", str(side * side),
               "--batch", str(B), "--heads", str(H), "--dim", str(D), "--dtype", "bf16", "--json", path]
        print("compare_neighborhood_gpu: " + " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True, stdout=sys.stderr, env=dict(os.environ, LINEA_NATTEN_KERNEL=kernel))
        with open(path) as f:
            rows = [r for r in json.load(f) if r["mechanism"] == "neighborhood"]
        return rows[0]["ms"] if rows else None


def linea_op(linea, q, k, v, kernel, dtype="f32"):
    """Linea's o for q, k, v [B, X, Y, H, D] (sent as f32, uploaded as `dtype`) through `linea op neighborhood --backend cuda`."""
    from safetensors.torch import load_file, save_file
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
        save_file({"q": q.float().cpu().contiguous(), "k": k.float().cpu().contiguous(), "v": v.float().cpu().contiguous()}, inp)
        cmd = [linea, "op", "neighborhood", "--backend", "cuda", "--dtype", dtype, "--inputs", inp, "--output", out,
               "--kernel-size", ",".join(str(x) for x in kernel)]
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        return load_file(out)["o"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--linea", help="path of the linea binary (omit to time SDPA and NATTEN only)")
    p.add_argument("--side", type=int, default=64, help="grid side: side x side tokens")
    p.add_argument("--kernel", type=int, default=13)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--check", action="store_true", help="compare Linea's and NATTEN's outputs with the masked SDPA first")
    a = p.parse_args()
    B, X, H, D, K = a.batch, a.side, a.heads, a.dim, a.kernel
    N = X * X
    dev = torch.device("cuda")
    bench = timer()
    na2d = natten_na2d()
    torch.manual_seed(0)
    mask = neighborhood_mask([X, X], [K, K], device=dev)
    print(f"compare_neighborhood_gpu: {torch.cuda.get_device_name()}, grid {X}x{X}, kernel {K}x{K}, B={B} H={H} D={D}, "
          f"{mask.sum().item() / N:.1f} keys per query (mask density {mask.float().mean().item():.4f})", file=sys.stderr)

    if a.check:
        q, k, v = (torch.randn(B, X, X, H, D, device=dev) for _ in range(3))
        ref = F.scaled_dot_product_attention(*(t.reshape(B, N, H, D).transpose(1, 2) for t in (q, k, v)), attn_mask=mask)
        ref = ref.transpose(1, 2).reshape(B, X, X, H, D)
        if a.linea:
            for dtype in ["f32", "bf16"]:  # bf16 at D in {64, 128}: the tensor-core kernel (inputs rounded, so ~1e-2)
                got = linea_op(a.linea, q, k, v, [K, K], dtype).to(dev)
                err = ((got - ref).norm() / ref.norm()).item()
                print(f"compare_neighborhood_gpu: check linea {dtype} inputs vs masked SDPA (f32): rel err {err:.2e}", file=sys.stderr)
        if na2d:
            got = na2d(q, k, v, K)
            err = ((got.float() - ref).norm() / ref.norm()).item()
            print(f"compare_neighborhood_gpu: check natten vs masked SDPA (f32): rel err {err:.2e}", file=sys.stderr)

    ours = linea_bench(a.linea, X, B, H, D) if a.linea and K == 13 else None
    portable = linea_bench(a.linea, X, B, H, D, "portable") if a.linea and K == 13 else None
    if a.linea and K != 13:
        print("compare_neighborhood_gpu: linea bench times kernel 13 only; Linea column n/a", file=sys.stderr)
    q, k, v = (torch.randn(B, X, X, H, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
    qs, ks, vs = (t.reshape(B, N, H, D).transpose(1, 2).contiguous() for t in (q, k, v))  # SDPA's [B, H, N, D]
    with torch.no_grad():
        sdpa = bench(lambda: F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask))
        dense = bench(lambda: F.scaled_dot_product_attention(qs, ks, vs))  # no mask (flash): the dense lower bound
        theirs = bench(lambda: na2d(q, k, v, K)) if na2d else None
    rows = [("linea (auto: tensor cores)", ours), ("linea portable (fp32 cores)", portable), ("sdpa + neighborhood mask", sdpa), ("sdpa dense, no mask", dense), ("natten na2d", theirs)]
    print(f"{'what':28} {'ms':>9} {'sdpa_mask/this':>15}")
    for name, ms in rows:
        print(f"{name:28} " + (f"{ms:9.4f} {sdpa / ms:15.2f}" if ms else f"{'n/a':>9} {'':>15}"))
    if ours:
        print(f"linea is {sdpa / ours:.2f}x the masked SDPA (target >= 3)")


if __name__ == "__main__":
    main()
