#!/usr/bin/env python3
"""Times long convolutions on the CPU beside an anchor: safari's fftconv (torch.fft, float32, no GELU) and
`linea bench --mechanism long_conv` at the same shapes (B = 1, H channels, a filter as long as the sequence, with D),
interleaved per length so both see the same load. Prints ms per point (fastest of --reps) and the fitted exponent of
time over T for each.

    python3 lab/compare_longconv.py --linea .build/release/linea [--lengths 1024,4096,16384,65536] [--channels 512]
"""
import argparse
import math
import re
import subprocess
import time

import torch


def fftconv(u, k, D):
    L = u.shape[-1]
    n = 2 * L
    k_f = torch.fft.rfft(k, n=n) / n
    u_f = torch.fft.rfft(u, n=n)
    y = torch.fft.irfft(u_f * k_f, n=n, norm="forward")[..., :L]
    return y + u * D.unsqueeze(-1)


def torch_ms(H, L, reps):
    u, k, D = torch.randn(1, H, L), torch.randn(H, L), torch.randn(H)
    fftconv(u, k, D)
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        fftconv(u, k, D)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def linea_ms(binary, H, L):
    out = subprocess.run([binary, "bench", "--mechanism", "long_conv", "--lengths", str(L), "--heads", "1", "--dim", str(H)],
                         capture_output=True, text=True, check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith("long_conv"))
    return float(re.split(r"\s+", row)[6])


def exponent(points):
    big = [(t, ms) for t, ms in points if t >= 4096] or points
    if len(big) < 2:
        return float("nan")
    xs, ys = [math.log(t) for t, _ in big], [math.log(ms) for _, ms in big]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--linea", required=True)
    parser.add_argument("--lengths", default="1024,4096,16384,65536")
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B = 1, H = {args.channels}, Lk = L, with D")
    print(f"{'L':>6}  {'torch ms':>9}  {'linea ms':>9}  torch/linea")
    ours, theirs = [], []
    for L in lengths:
        t = torch_ms(args.channels, L, args.reps)
        m = linea_ms(args.linea, args.channels, L)
        theirs.append((L, t))
        ours.append((L, m))
        print(f"{L:>6}  {t:>9.2f}  {m:>9.2f}  {t / m:.2f}x")
    print(f"time ~ T^{exponent(theirs):.2f} (torch), T^{exponent(ours):.2f} (linea) over T >= 4096")


if __name__ == "__main__":
    main()
