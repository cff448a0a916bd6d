#!/usr/bin/env python3
"""Linea's CPU path beside PyTorch and numpy, in one run on one machine.

  python3 lab/compare_cpu.py --linea .build/release/linea [--threads 2] [--lengths 4096,16384]

Prints the CPU (vendor, model, vector flags), then:
  - sgemm, n = 2048: Linea's (`linea bench --sgemm`: OpenBLAS as Linea loads it) against
    torch.matmul and numpy's matmul (numpy twice: with the environment as given and with OPENBLAS_CORETYPE and
    OPENBLAS_L2_SIZE unset, since some machines set them for old OpenBLAS builds; the core numpy ran is printed);
  - flash attention, causal, B = 1, H = 8, D = 64, at each length: `linea bench` against
    torch.nn.functional.scaled_dot_product_attention on the same shapes;
  - each ratio ours/theirs (throughput; > 1 is faster). Every time is the fastest of several runs, as in `linea bench`,
    and each side runs in three interleaved rounds, the best round counting (a shared host's load moves between rounds).
With --threads N every side runs N threads (LINEA_THREADS, torch.set_num_threads, OPENBLAS_NUM_THREADS) and, where
taskset exists, the whole run is pinned to the first N cores. Needs torch and numpy (pip install torch numpy).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SGEMM_N = 2048


def cpu_summary():
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return "unknown CPU"
    flags = set(info.get("flags", "").split())
    wide = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile") if f in flags]
    return f"{info.get('vendor_id', '?')} / {info.get('model name', '?')} / {' '.join(wide)}"


def best_time(fn, runs):
    """Fastest of `runs` timed calls after one warm-up: noise only adds time (as `linea bench` does)."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def numpy_sgemm(threads, clean_env):
    """numpy's matmul rate in a child process (the OpenBLAS core is fixed when numpy loads it)."""
    code = (
        "import time, numpy as np\n"
        f"n = {SGEMM_N}\n"
        "a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)\n"
        "a @ b; ts = []\n"
        "for _ in range(10):\n"
        "    s = time.perf_counter(); a @ b; ts.append(time.perf_counter() - s)\n"
        "core = '?'\n"
        "try:\n"
        "    from threadpoolctl import threadpool_info\n"
        "    core = ','.join(str(i.get('architecture')) for i in threadpool_info() if i.get('internal_api') == 'openblas')\n"
        "except Exception: pass\n"
        "print(2 * n ** 3 / min(ts) / 1e9, core)\n")
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    if clean_env:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return None, out.stderr.strip().splitlines()[-1:] or ["failed"]
    rate, core = out.stdout.split()
    return float(rate), core


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--linea", required=True, help="path to the linea binary")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", default="4096,16384")
    args = parser.parse_args()
    threads = args.threads
    if shutil.which("taskset") and os.environ.get("LINEA_PINNED") != "1":
        cores = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:threads])
        os.execvpe("taskset", ["taskset", "-c", cores, sys.executable] + sys.argv, dict(os.environ, LINEA_PINNED="1"))
    import numpy  # noqa: F401  (fail early if missing)
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    print(f"cpu: {cpu_summary()}; {threads} threads, pinned to {sorted(os.sched_getaffinity(0))}")
    print(f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), numpy {numpy.__version__}")

    # Flash attention: three rounds, each round `linea bench` at every length, then SDPA at every length; the best
    # time of each side over the rounds (a shared host's load moves between rounds, and noise only adds time).
    env = dict(os.environ, LINEA_THREADS=str(threads))
    tensors = {T: tuple(torch.randn(1, 8, T, 64) for _ in range(3)) for T in lengths}
    ours, theirs = {T: [] for T in lengths}, {T: [] for T in lengths}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.json")
        for r in range(3):
            run = subprocess.run([args.linea, "bench", "--mechanism", "attention", "--lengths", args.lengths,
                                  "--heads", "8", "--dim", "64", "--json", path], env=env, capture_output=True, text=True)
            if r == 0:
                print(run.stdout.strip())
            if run.returncode != 0:
                sys.exit(f"linea bench failed ({run.returncode}): {run.stderr.strip()}")
            for point in json.load(open(path)):
                ours[point["T"]].append(point["ms"] / 1e3)
            for T, (q, k, v) in tensors.items():
                theirs[T].append(best_time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                           3 if T > 8192 else 5))

    # sgemm: three rounds, each side once per round, best of the rounds (a shared host's load moves between rounds).
    a, b = torch.randn(SGEMM_N, SGEMM_N), torch.randn(SGEMM_N, SGEMM_N)
    rounds = {"linea": [], "torch": [], "numpy_env": [], "numpy_clean": []}
    for _ in range(3):
        out = subprocess.run([args.linea, "bench", "--sgemm"], env=env, capture_output=True, text=True).stdout
        rounds["linea"].append(float(out.split("threads: ")[1].split()[0]))
        rounds["torch"].append(2 * SGEMM_N ** 3 / best_time(lambda: a @ b, 10) / 1e9)
        rounds["numpy_env"].append(numpy_sgemm(threads, clean_env=False))
        rounds["numpy_clean"].append(numpy_sgemm(threads, clean_env=True))
    linea_sgemm, torch_sgemm = max(rounds["linea"]), max(rounds["torch"])
    np_env, np_env_core = max(rounds["numpy_env"], key=lambda r: r[0] or 0)
    np_clean, np_clean_core = max(rounds["numpy_clean"], key=lambda r: r[0] or 0)
    print()
    print(f"sgemm n = {SGEMM_N}, GFLOP/s, best of 3 rounds (each: " + "; ".join(
        f"{k} " + "/".join(f"{(r[0] if isinstance(r, tuple) else r) or 0:.0f}" for r in v) for k, v in rounds.items()) + ")")
    print(f"  linea {linea_sgemm:.1f}")
    print(f"  torch.matmul {torch_sgemm:.1f}: ours/theirs {linea_sgemm / torch_sgemm:.2f}x")
    for label, rate, core in (("numpy (environment as given)", np_env, np_env_core),
                              ("numpy (OPENBLAS_CORETYPE unset)", np_clean, np_clean_core)):
        if rate is None:
            print(f"  {label}: failed: {core}")
        else:
            print(f"  {label}, core {core}: {rate:.1f}: ours/theirs {linea_sgemm / rate:.2f}x")

    print("flash attention, causal, B = 1, H = 8, D = 64, best of 3 rounds:")
    for T in lengths:
        flops = 4 * 8 * 64 * T * (T + 1) / 2
        mine, other = min(ours[T]), min(theirs[T])
        each = "/".join(f"{x * 1e3:.0f}" for x in ours[T]) + " vs " + "/".join(f"{x * 1e3:.0f}" for x in theirs[T])
        print(f"  T = {T}: linea {mine * 1e3:.1f} ms ({flops / mine / 1e9:.1f} GFLOP/s), torch SDPA {other * 1e3:.1f} ms "
              f"({flops / other / 1e9:.1f} GFLOP/s): ours/theirs {other / mine:.2f}x  (rounds, ms: {each})")


if __name__ == "__main__":
    main()
