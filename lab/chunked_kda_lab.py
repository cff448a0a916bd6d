#!/usr/bin/env python3
"""Kernel lab for kda's chunked CUDA forward (chunked_kda.cu), for the GPU machine (python3 with torch and cupy; no
Swift needed), as lab/chunked_lab.py is for the other chunked kernels.

Compiles chunked_kda.cu and chunked_scan.cu straight from Sources/LineaCUDA/Kernels/cu with CuPy's NVRTC, launches them
as CUDAChunkedKDA does (its plan mirrored here: prepass, then for split sequences the end-state pass and the scan, then
the walk), checks against an fp64 token-by-token recurrence on small shapes (grouped value heads, steep gates, no
initial state, split sequences) and times the shapes of `linea bench --backend cuda` (bf16, H = 16, K = V = 128,
B*T = 32768; fla's inputs: logsigmoid gates per channel, L2-normalized keys, beta in (0, 1)).

  python3 lab/chunked_kda_lab.py --check               # checks, then times
  python3 lab/chunked_kda_lab.py --fla                 # fla's chunk_kda timed beside each row (do_bench)
  python3 lab/chunked_kda_lab.py --bv 128 --segments 2 # force the walk's V slice and the segment count
  python3 lab/chunked_kda_lab.py --prep-only           # time the prepass alone
"""
import argparse, os, time
import numpy as np, torch, cupy as cp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--T", default="2048,8192,32768", help="lengths timed (B = 32768 / T)")
ap.add_argument("--check", action="store_true", help="compare with the fp64 recurrence first")
ap.add_argument("--bv", type=int, default=0, help="the walk's V slice, 64 or 128 (default: the plan's)")
ap.add_argument("--segments", type=int, default=0, help="sequence segments (default: the plan's; 1: no cut)")
ap.add_argument("--prep-only", action="store_true", help="time only the prepass")
ap.add_argument("--fla", action="store_true", help="also time fla's chunk_kda on the same inputs")
ap.add_argument("--defines", default="", help="extra NVRTC options, space-separated")
ap.add_argument("--reps", type=int, default=10)
args = ap.parse_args()

KERNELS = os.path.join(ROOT, "Sources/LineaCUDA/Kernels/cu")
# The library's NVRTC options (CUDAContext.function: no fast-math; the kernels ask for ex2.approx themselves).
MAJOR, MINOR = torch.cuda.get_device_capability(0)
OPTIONS = ("-std=c++17", f"-arch=sm_{MAJOR}{MINOR}", "-default-device", "-I" + KERNELS) + tuple(args.defines.split())
started = time.time()
modules = {}
for gva in (0, 1):  # the library loads the grouped-heads module (-DLINEA_GVA=1) when HV > H
    modules[gva] = cp.RawModule(code='#include "chunked_kda.cu"\n', options=OPTIONS + (("-DLINEA_GVA=1",) if gva else ()))
    modules[gva].compile()
scan_module = cp.RawModule(code='#include "chunked_scan.cu"\n', options=OPTIONS)
scan_module.compile()
print(f"compiled in {time.time() - started:.1f}s", flush=True)
SMS = torch.cuda.get_device_properties(0).multi_processor_count
ptr = lambda t: np.uint64(t.data_ptr()) if t is not None else np.uint64(0)


def function(module, name, smem):
    f = module.get_function(name)
    if smem > 48 * 1024:
        f.max_dynamic_shared_size_bytes = smem
    return f


def plan(B, T, HV, V):
    """CUDAChunkedKDA.Plan: (V slice, chunks per segment, segments)."""
    chunks = max(1, (T + 63) // 64)
    bv = args.bv or (128 if V == 128 and B * HV >= SMS else 64)
    blocks = B * HV * (V // bv)
    wanted = min(max(2, SMS // blocks), chunks // 4) if blocks < SMS * 3 // 4 and chunks >= 8 else 1
    if args.segments:
        wanted = min(args.segments, chunks)
    per = (chunks + wanted - 1) // wanted
    return bv, per, (chunks + per - 1) // per


def run(q, k, v, g, beta, h0, scale, out_fp32=False):
    """CUDAChunkedKDA.forward's launches; q, k [B,T,H,K] bf16, v [B,T,HV,V] bf16, g [B,T,HV,K], beta [B,T,HV] fp32."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    group = HV // H
    mod = modules[1 if group > 1 else 0]
    bv, per, segs = plan(B, T, HV, V)
    NC = (T + 63) // 64
    dev, bf, f32 = "cuda", torch.bfloat16, torch.float32
    w, qgh, qgl, kdh, kdl = (torch.empty(B, T, HV, K, device=dev, dtype=bf) for _ in range(5))
    u = torch.empty(B, T, HV, V, device=dev, dtype=f32)
    aqh, aql = (torch.empty(B, T, HV, 64, device=dev, dtype=bf) for _ in range(2))
    gl = torch.empty(B, NC, HV, K, device=dev, dtype=f32)
    o = torch.empty(B, T, HV, V, device=dev, dtype=f32 if out_fp32 else bf)
    ht = torch.empty(B, HV, K, V, device=dev, dtype=f32)
    prep_smem = (2 * 64 * (K + 8) + 64 * (V + 8)) * 2 + (64 * (K + 4) + 64 * 68 + 64 + 512) * 4
    function(mod, f"linea_kda_prep_k{K}_v{V}", prep_smem)(
        (NC, HV, B), (128,), (ptr(q), ptr(k), ptr(v), ptr(g), ptr(beta), np.int32(T), np.int32(HV), np.int32(group),
                              np.float32(scale), ptr(w), ptr(u), ptr(qgh), ptr(qgl), ptr(kdh), ptr(kdl), ptr(aqh),
                              ptr(aql), ptr(gl)), shared_mem=prep_smem)
    if args.prep_only:
        return o, ht
    ss = None
    if segs > 1:
        ss = torch.empty(B * segs * HV * K * V, device=dev, dtype=f32)
        st = torch.empty(B * segs * HV * K * K, device=dev, dtype=f32)
        end_smem = 6 * 64 * (K + 8) * 2 + 2 * 64 * 68 * 4 + 2 * K * 4
        function(mod, f"linea_kda_end_k{K}", end_smem)(
            ((V + K) // 64, HV, B * segs), (128,), (ptr(kdh), ptr(kdl), ptr(w), ptr(u), ptr(gl), ptr(h0), np.int32(T),
                                                    np.int32(HV), np.int32(V), np.int32(per), ptr(ss), ptr(st)),
            shared_mem=end_smem)
        function(scan_module, "linea_chunk_seg_scan_delta", 0)(
            (V // 32, HV, B), (256,), (ptr(ss), ptr(st), ptr(h0), np.int32(segs), np.int32(HV), np.int32(K), np.int32(V)))
    walk_smem = (7 * 64 * (K + 8) + 4 * 64 * 72) * 2 + (64 * (bv + 4) + 2 * K) * 4
    function(mod, f"linea_kda_walk_k{K}_v{bv}", walk_smem)(
        (V // bv, HV, B * segs), (2 * bv,), (ptr(qgh), ptr(qgl), ptr(kdh), ptr(kdl), ptr(w), ptr(u), ptr(aqh), ptr(aql),
                                             ptr(gl), ptr(h0), ptr(ht), ptr(o), np.int32(0 if out_fp32 else 1), np.int32(T),
                                             np.int32(HV), np.int32(V), np.float32(scale), np.int32(per), ptr(ss)),
        shared_mem=walk_smem)
    return o, ht


def reference(q, k, v, g, beta, scale, h0):
    """Token-by-token fp64 recurrence on the GPU (fla's fused_recurrent_kda), grouped heads expanded."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    q, k = (x.double().repeat_interleave(HV // H, dim=2) for x in (q, k))
    v, g, beta = v.double(), g.double(), beta.double()
    S = h0.double().clone() if h0 is not None else torch.zeros(B, HV, K, V, dtype=torch.float64, device=q.device)
    o = torch.empty(B, T, HV, V, dtype=torch.float64, device=q.device)
    for t in range(T):
        S = S * torch.exp(g[:, t])[..., None]
        kt = k[:, t]
        vn = beta[:, t][..., None] * (v[:, t] - torch.einsum("bhk,bhkv->bhv", kt, S))
        S = S + torch.einsum("bhk,bhv->bhkv", kt, vn)
        o[:, t] = scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S)
    return o, S


def inputs(B, T, H, HV, K, V, seed=0, with_h0=False, steep=False):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(B, T, H, K, device="cuda", generator=gen).bfloat16()
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, device="cuda", generator=gen), dim=-1).bfloat16()
    v = torch.randn(B, T, HV, V, device="cuda", generator=gen).bfloat16()
    x = torch.randn(B, T, HV, K, device="cuda", generator=gen)
    g = (-torch.rand(B, T, HV, K, device="cuda", generator=gen) * 20) if steep else torch.nn.functional.logsigmoid(x)
    beta = torch.rand(B, T, HV, device="cuda", generator=gen)
    h0 = torch.randn(B, HV, K, V, device="cuda", generator=gen) * 0.1 if with_h0 else None
    return q, k, v, g.float().contiguous(), beta, h0


def rel_rms(a, b):
    a, b = a.double(), b.double()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()


if args.check:
    bad = 0
    for B, T, H, HV, K, V, with_h0, steep in [
            (2, 200, 3, 3, 64, 64, True, False), (1, 333, 2, 2, 128, 128, False, False), (1, 256, 2, 4, 128, 64, True, False),
            (1, 1500, 2, 2, 128, 128, True, False), (1, 1100, 1, 3, 64, 128, True, True), (2, 130, 2, 2, 128, 128, True, True),
            (1, 1, 1, 1, 64, 64, True, False), (3, 65, 1, 2, 128, 128, False, False)]:
        q, k, v, g, beta, h0 = inputs(B, T, H, HV, K, V, seed=T, with_h0=with_h0, steep=steep)
        o, ht = run(q, k, v, g, beta, h0, K ** -0.5, out_fp32=True)
        ro, rs = reference(q, k, v, g, beta, K ** -0.5, h0)
        eo, es = rel_rms(o, ro), rel_rms(ht, rs)
        finite = bool(torch.isfinite(o).all() and torch.isfinite(ht).all())
        bad += not (finite and eo <= 2e-3 and es <= 2e-3)
        print(f"check kda B={B} T={T} H={H} HV={HV} K={K} V={V} h0={with_h0} steep={steep} plan={plan(B, T, HV, V)}: "
              f"o {eo:.2e} state {es:.2e} finite {finite}", flush=True)
    print("checks: " + ("all ok" if not bad else f"{bad} FAILED"), flush=True)
for T in [int(x) for x in args.T.split(",")]:
    B, H, K, V = 32768 // T, 16, 128, 128
    q, k, v, g, beta, _ = inputs(B, T, H, H, K, V)
    call = lambda: run(q, k, v, g, beta, None, K ** -0.5)
    call()
    torch.cuda.synchronize()
    # As CUDABench.time and triton's do_bench: an L2-evicting fill before each run, one wait at the end.
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(args.reps)]
    for a, b in events:
        flush.zero_(); a.record(); call(); b.record()
    torch.cuda.synchronize()
    times = sorted(a.elapsed_time(b) for a, b in events)
    print(f"time kda{' prep' if args.prep_only else ''} T={T:6d} B={B:3d} plan={plan(B, T, H, V)}: "
          f"{times[len(times) // 2]:.3f} ms", flush=True)
    if args.fla:
        from triton.testing import do_bench
        from fla.ops.kda import chunk_kda
        theirs = lambda: chunk_kda(q, k, v, g, beta)
        print(f"fla  kda T={T:6d} B={B:3d}: {do_bench(theirs, return_mode='median'):.3f} ms", flush=True)
