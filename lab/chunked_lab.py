#!/usr/bin/env python3
"""Kernel lab for the CUDA chunked recurrences, for the GPU machine (python3 with torch and cupy; no Swift needed).

Compiles the chunked kernel sources straight out of Sources/LineaCUDA/Kernels/cu (chunked_*.cu) with CuPy's NVRTC,
launches it the way CUDAChunked does (same launch plan, mirrored here), checks it against an fp64 token-by-token
recurrence on small shapes, and times it on the shapes of `linea bench --backend cuda` (bf16, H = 16, K = V = 128,
B*T = 32768). Edit the kernel, rerun: one device call per variant instead of a Swift build.

  python3 lab/chunked_lab.py --check                     # checks, then times every mechanism
  python3 lab/chunked_lab.py --bv 64 --mech delta_rule   # force the V block
  python3 lab/chunked_lab.py --wy-only                   # time the delta rules' WY prepass alone
  python3 lab/chunked_lab.py --defines "-DFOO=1"         # extra NVRTC options for a variant
  python3 lab/chunked_lab.py --split --check             # scalar decays through chunked_split_lab.cu instead,
                                                                # with the state and output kernels also timed alone
  python3 lab/chunked_lab.py --fla                       # fla's chunk kernel timed beside each row (do_bench)
  python3 lab/chunked_lab.py --end-only --T 32768        # segmented runs: only the end-state pass and the scan
  python3 lab/chunked_lab.py --kernel-file OLD.cu        # one source with every chunked entry instead
                                                                # (same entries and arguments; across revisions that
                                                                # changed them: lab/lab_versions.sh)
"""
import argparse, math, os, re, time
import numpy as np, torch, cupy as cp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DELTA = ("delta_rule", "gated_delta_rule")
ap = argparse.ArgumentParser()
ap.add_argument("--mech", default="linear_attn,retention,simple_gla,delta_rule,gated_delta_rule")
ap.add_argument("--T", default="2048,8192,32768", help="lengths timed (B = 32768 / T)")
ap.add_argument("--check", action="store_true", help="compare with the fp64 recurrence first")
ap.add_argument("--bv", type=int, default=0, help="V block of the scalar decays (default: CUDAChunked's plan)")
ap.add_argument("--segments", type=int, default=0, help="segments of the scalar decays (default: the plan's)")
ap.add_argument("--wy-only", action="store_true", help="time only the WY prepass of the delta rules")
ap.add_argument("--defines", default="", help="extra NVRTC options, space-separated")
ap.add_argument("--reps", type=int, default=10)
ap.add_argument("--split", action="store_true", help="scalar decays: the split lab kernels (chunked_split_lab.cu)")
ap.add_argument("--split-bv", type=int, default=0, help="V block of the split state pass (default: the plan's)")
ap.add_argument("--fla", action="store_true", help="also time fla's chunk kernel of each mechanism, same inputs")
ap.add_argument("--end-only", action="store_true", help="segmented runs: time only the end-state pass and the scan")
ap.add_argument("--kernel-file", default="", help="one .cu with every chunked entry to compile instead (A/B runs)")
args = ap.parse_args()

KERNELS = os.path.join(ROOT, "Sources/LineaCUDA/Kernels/cu")
# The library compiles each stage on its own (chunked_fwd.cu, chunked_wy.cu, ...); the lab compiles them as one module.
# Their headers (chunked_common.cuh, ...) come from the include path (the library passes them to NVRTC by name).
UNITS = ["chunked_fwd.cu", "chunked_end.cu", "chunked_delta_fwd.cu", "chunked_delta_end.cu", "chunked_wy.cu", "chunked_scan.cu"]
OPTIONS = ("-std=c++17", "-arch=sm_90", "--use_fast_math", "-I" + KERNELS) + tuple(args.defines.split())
source = open(args.kernel_file).read() if args.kernel_file else "".join(f'#include "{u}"\n' for u in UNITS)
started = time.time()
module = cp.RawModule(code=source, options=OPTIONS)
module.compile()
split_module = None
if args.split:
    split_module = cp.RawModule(code='#include "chunked_common.cuh"\n' + open(os.path.join(ROOT, "lab", "chunked_split_lab.cu")).read(),
                                options=OPTIONS)
    split_module.compile()
print(f"compiled in {time.time() - started:.1f}s", flush=True)
SMS = torch.cuda.get_device_properties(0).multi_processor_count
ptr = lambda t: np.uint64(t.data_ptr()) if t is not None else np.uint64(0)


def function(name, smem, mod=None):
    f = (mod or module).get_function(name)
    if smem > 48 * 1024:
        f.max_dynamic_shared_size_bytes = smem
    return f


def plan(mech, B, T, H, V):
    """CUDAChunked.Plan: (V block, chunks per segment, segments)."""
    chunks = max(1, (T + 63) // 64)
    if mech in DELTA:  # 64 columns per block
        full = B * H * (V // 64) >= SMS * 3 // 4
        if not args.segments and (full or chunks < 8):
            return 64, chunks, 1
        p = args.segments or min(max(2, 2 * SMS // (B * H * (V // 64))), chunks // 4)
        per = -(-chunks // p)
        return 64, per, -(-chunks // per)
    bv = args.bv or min(V, 128)
    blocks = B * H * (V // bv)
    if args.segments:
        per = -(-chunks // args.segments)
        return bv, per, -(-chunks // per)
    if blocks >= SMS or chunks < 8:
        return bv, chunks, 1
    return (bv,) + scalar_segments(chunks, blocks, SMS)


def cut_cost(per, p, chunks, blocks, sms):
    """CUDAChunked.Plan.cutCost: modelled time of a cut (walk steps), the last segments dispatched first."""
    last, short, others = chunks - (p - 1) * per, blocks * (p - 1), sms - blocks
    done = lambda t: others * (t // per) + blocks * (max(0, t - last) // per)
    walk = last
    if short > 0:
        walk = max(last, min(e for r in range(1, short // others + 2) for e in (r * per, last + r * per) if done(e) >= short))
    return walk + 0.6 * (-(-short // (2 * sms)) * per)


def scalar_segments(chunks, blocks, sms):
    """CUDAChunked.Plan.scalarSegments: (chunks per segment but the last, segments)."""
    even = min(max(2, 2 * sms // blocks), chunks // 4)
    per = -(-chunks // even)
    best = (per, -(-chunks // per))
    best_cost = 0.95 * cut_cost(*best, chunks, blocks, sms)
    for p in range(2, max(2, min(chunks // 4, 4 * sms // blocks)) + 1):
        for rounds in range(1, 5):
            per = chunks // (p - 1 + rounds)
            cost = cut_cost(per, p, chunks, blocks, sms) if per >= 4 and chunks - (p - 1) * per >= per else best_cost
            if cost < best_cost:
                best, best_cost = (per, p), cost
    return best


def seg_scan(ss, sg, h0, segs, B, H, KV):
    """linea_chunk_seg_scan: segment end states (from a zero state) into segment start states, h0 folded in."""
    function("linea_chunk_seg_scan", 0)(((KV + 255) // 256, H, B), (256,),
                                         (ptr(ss), ptr(sg), ptr(h0), np.int32(segs), np.int32(H), np.int32(KV)))


PART = None  # time only the "state" or the "out" kernel of the split path


def split_plan(B, T, H, V):
    """Launch plan of the split lab kernels: (V block of the state pass, chunks per segment, segments)."""
    bvs = args.split_bv or (64 if B * H * (V // 64) >= SMS else 32)
    chunks = max(1, (T + 63) // 64)
    blocks = B * H * (V // bvs)
    p = 1 if blocks >= 2 * SMS or chunks < 8 else min(-(-3 * SMS // blocks), chunks // 4)
    per = -(-chunks // (args.segments or p))
    return bvs, per, -(-chunks // per)


def run_split(mech, q, k, v, g, h0, scale, out_fp32=False):
    B, T, H, K = q.shape
    V = v.shape[-1]
    gate_mode = {"retention": 1, "simple_gla": 2}.get(mech, 0)
    NC = (T + 63) // 64
    bvs, per, segs = split_plan(B, T, H, V)
    o = torch.empty(B, T, H, V, device="cuda", dtype=torch.float32 if out_fp32 else torch.bfloat16)
    ht = torch.empty(B, H, K, V, device="cuda", dtype=torch.float32)
    hq = torch.empty(B, NC, H, K, V, device="cuda", dtype=torch.float16)
    hs = torch.empty(B, NC, H, V // bvs, device="cuda", dtype=torch.float32)
    ss = torch.empty(B * segs * H * K * V, device="cuda", dtype=torch.float32) if segs > 1 else None
    sg = torch.empty(B * segs * H, device="cuda", dtype=torch.float32) if segs > 1 else None
    smem_s = (2 * 64 * (K + 8) + 4 * 64 * (bvs + 8) + K * (bvs + 8)) * 2 + (4 * 64 + 4) * 4
    state = function(f"linea_split_state_k{K}_v{bvs}", smem_s, split_module)
    args_s = lambda end_only, h0_, ht_: (
        ptr(k), ptr(v), ptr(g), np.int32(gate_mode), ptr(h0_), ptr(ht_), ptr(hq), ptr(hs), np.int32(T), np.int32(H),
        np.int32(V), np.int32(per), np.int32(end_only), ptr(ss), ptr(sg))
    if PART != "out":
        if segs > 1:
            state((V // bvs, H, B * segs), (128,), args_s(1, None, None), shared_mem=smem_s)
            seg_scan(ss, sg, h0, segs, B, H, K * V)
        state((V // bvs, H, B * segs), (128,), args_s(0, h0, ht), shared_mem=smem_s)
    smem_o = (2 * 64 * (K + 8) + 64 * 72 + K * 72) * 2 + 4 * 64 * 4
    if PART != "state":
        function(f"linea_split_out_k{K}", smem_o, split_module)(
            (V // 64, NC, B * H), (128,), (ptr(q), ptr(k), ptr(v), ptr(g), np.int32(gate_mode), ptr(hq), ptr(hs),
                                           np.int32(bvs), ptr(o), np.int32(0 if out_fp32 else 1), np.int32(T),
                                           np.int32(H), np.int32(V), np.float32(scale)), shared_mem=smem_o)
    return o, ht


def shown_plan(mech, B, T, H, V):
    """The plan a row ran with: the split lab kernels' or CUDAChunked's."""
    return split_plan(B, T, H, V) if args.split and mech not in DELTA else plan(mech, B, T, H, V)


def run(mech, q, k, v, g, beta, h0, scale, out_fp32=False):
    if args.split and mech not in DELTA:
        return run_split(mech, q, k, v, g, h0, scale, out_fp32)
    B, T, H, K = q.shape
    V = v.shape[-1]
    delta = mech in DELTA
    gate_mode = {"retention": 1, "simple_gla": 2, "gated_delta_rule": 2}.get(mech, 0)
    o = torch.empty(B, T, H, V, device="cuda", dtype=torch.float32 if out_fp32 else torch.bfloat16)
    ht = torch.empty(B, H, K, V, device="cuda", dtype=torch.float32)
    bv, per, segs = plan(mech, B, T, H, V)
    C, lk, lv = 64, K + 8, bv + 8
    kind = ("gdelta" if gate_mode else "delta") if delta else ("gated" if gate_mode else "plain")  # the entries' suffix
    grid = (V // bv, H, B * segs)
    if delta:
        w = torch.empty(B, T, H, K, device="cuda", dtype=torch.bfloat16)
        u = torch.empty(B, T, H, V, device="cuda", dtype=torch.float32)
        wy_smem = (64 * (K + 8) + 64 * (V + 8)) * 2 + (64 * 68 + 3 * 64) * 4
        function(f"linea_chunk_wy_k{K}_v{V}", wy_smem)(
            ((T + 63) // 64, H, B), (128,), (ptr(k), ptr(v), ptr(beta), ptr(g), np.int32(gate_mode), ptr(w), ptr(u),
                                             np.int32(T), np.int32(H), np.int32(1)), shared_mem=wy_smem)
        if args.wy_only:
            return o, ht
        smem = 4 * C * lk * 2 + 2 * C * 72 * 2 + C * 68 * 4 + 4 * C * 4  # k x2, q, w; scores hi, lo; u; gates
        f = function(f"linea_chunk_fwd_k{K}_{kind}", smem)
        ss = st = None
        if segs > 1:  # end states and transitions of segments 0..P-2, the scan, then every segment from its start
            ss = torch.empty(B * segs * H * K * V, device="cuda", dtype=torch.float32)
            st = torch.empty(B * segs * H * K * K, device="cuda", dtype=torch.float32)
            end_smem = 2 * 2 * C * lk * 2 + 2 * C * 68 * 4 + 4 * C * 4  # k, w, u tiles x2; decays (lc_chunk_end_delta)
            function(f"linea_chunk_end_k{K}_{kind}", end_smem)(
                ((V + K) // 64, H, B * segs), (128,), (ptr(k), ptr(u), ptr(w), ptr(g), np.int32(gate_mode), ptr(h0),
                                                       np.int32(T), np.int32(H), np.int32(1), np.int32(V), np.int32(per),
                                                       ptr(ss), ptr(st)),
                shared_mem=end_smem)
            function("linea_chunk_seg_scan_delta", 0)((V // 32, H, B), (256,), (
                ptr(ss), ptr(st), ptr(h0), np.int32(segs), np.int32(H), np.int32(K), np.int32(V)))
            if args.end_only:
                return o, ht
        f(grid, (128,), (ptr(q), ptr(k), ptr(u), ptr(w), ptr(g), np.int32(gate_mode), ptr(h0), ptr(ht), ptr(o),
                         np.int32(0 if out_fp32 else 1), np.int32(T), np.int32(H), np.int32(1), np.int32(V),
                         np.float32(scale), np.int32(per), ptr(ss)), shared_mem=smem)
        return o, ht
    # CUDAChunked.launchForward's layout: q, k tiles x2; state hi, lo; v x2; gates; the traded score fragments (16 KB)
    smem = (2 * 2 * C * lk + 2 * K * lv + 2 * C * lv) * 2 + 8 * C * 4 + 16384
    common = lambda ss, sg, h0_, ht_: (
        ptr(q), ptr(k), ptr(v), ptr(g), np.int32(gate_mode), ptr(h0_), ptr(ht_), ptr(o), np.int32(0 if out_fp32 else 1),
        np.int32(T), np.int32(H), np.int32(1), np.int32(V), np.float32(scale), np.int32(per), np.int32(segs), ptr(ss),
        ptr(sg))
    f = function(f"linea_chunk_fwd_k{K}_v{bv}_{kind}", smem)
    ss = sg = None
    if segs > 1:
        ss = torch.empty(B * segs * H * K * V, device="cuda", dtype=torch.float32)
        sg = torch.empty(B * segs * H, device="cuda", dtype=torch.float32)
        end_smem = 2 * C * lk * 2 + 8 * C * 4 + 2 * C * lv * 2  # no q tiles, no smem copy of the state
        function(f"linea_chunk_end_k{K}_v{bv}_{kind}", end_smem)(grid, (256,), common(ss, sg, None, None), shared_mem=end_smem)
        seg_scan(ss, sg, h0, segs, B, H, K * V)
        if args.end_only:
            return o, ht
    f(grid, (256,), common(ss, sg, h0, ht), shared_mem=smem)
    return o, ht


def reference(mech, q, k, v, g, beta, scale, h0):
    """Token-by-token fp64 recurrence on the GPU (small shapes)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    q, k, v = q.double(), k.double(), v.double()
    S = h0.double().clone() if h0 is not None else torch.zeros(B, H, K, V, dtype=torch.float64, device=q.device)
    o = torch.empty(B, T, H, V, dtype=torch.float64, device=q.device)
    for t in range(T):
        if mech == "retention":
            S = S * torch.exp(g.double())[None, :, None, None]
        elif mech in ("simple_gla", "gated_delta_rule"):
            S = S * torch.exp(g[:, t].double())[:, :, None, None]
        kt, vt = k[:, t], v[:, t]
        if mech in DELTA:
            vt = beta[:, t].double()[:, :, None] * (vt - torch.einsum("bhk,bhkv->bhv", kt, S))
        S = S + torch.einsum("bhk,bhv->bhkv", kt, vt)
        o[:, t] = scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S)
    return o, S


def inputs(mech, B, T, H, K, V, seed=0, with_h0=False):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(B, T, H, K, device="cuda", generator=gen).bfloat16()
    k = torch.randn(B, T, H, K, device="cuda", generator=gen)
    k = (torch.nn.functional.normalize(k, dim=-1) if mech in DELTA else k).bfloat16()
    v = torch.randn(B, T, H, V, device="cuda", generator=gen).bfloat16()
    g = beta = None
    if mech == "retention":
        g = torch.tensor([math.log1p(-2.0 ** (-5 - h)) for h in range(H)], device="cuda", dtype=torch.float32)
    if mech in ("simple_gla", "gated_delta_rule"):
        g = -torch.rand(B, T, H, device="cuda", generator=gen) * 0.3 - 0.01
    if mech in DELTA:
        beta = torch.rand(B, T, H, device="cuda", generator=gen)
    h0 = torch.randn(B, H, K, V, device="cuda", generator=gen) * 0.1 if with_h0 else None
    return q, k, v, g, beta, h0


def rel_rms(a, b):
    a, b = a.double(), b.double()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()


mechs = args.mech.split(",")
if args.check:
    for mech in mechs:
        for B, T, H, K, V, with_h0 in [(2, 200, 3, 64, 64, True), (1, 333, 2, 128, 128, False),
                                       (1, 256, 2, 128, 64, True), (1, 1500, 2, 128, 128, True),
                                       (1, 1100, 3, 64, 128, True), (1, 1200, 2, 128, 128, False)]:
            q, k, v, g, beta, h0 = inputs(mech, B, T, H, K, V, seed=T, with_h0=with_h0)
            o, ht = run(mech, q, k, v, g, beta, h0, K ** -0.5, out_fp32=True)
            ro, rs = reference(mech, q, k, v, g, beta, K ** -0.5, h0)
            print(f"check {mech:17s} B={B} T={T} H={H} K={K} V={V} h0={with_h0} plan={shown_plan(mech, B, T, H, V)}: "
                  f"o {rel_rms(o, ro):.2e} state {rel_rms(ht, rs):.2e}", flush=True)
for T in [int(x) for x in args.T.split(",")]:
    B, H, K, V = 32768 // T, 16, 128, 128
    for mech in mechs:
        if args.wy_only and mech not in DELTA:
            continue
        q, k, v, g, beta, _ = inputs(mech, B, T, H, K, V)
        call = lambda: run(mech, q, k, v, g, beta, None, K ** -0.5)
        for PART in ([None, "state", "out"] if args.split and mech not in DELTA else [None]):
            call()
            torch.cuda.synchronize()
            # As CUDABench.time and triton's do_bench: an L2-evicting fill before each run, one wait at the end.
            flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(args.reps)]
            for a, b in events:
                flush.zero_(); a.record(); call(); b.record()
            torch.cuda.synchronize()
            times = [a.elapsed_time(b) for a, b in events]
            print(f"time {mech:17s} T={T:6d} B={B:3d} plan={shown_plan(mech, B, T, H, V)}{' ' + PART if PART else ''}: "
                  f"{sorted(times)[len(times) // 2]:.3f} ms", flush=True)
        PART = None
        if args.fla:  # compare_gpu.py's table of fla's kernels (the lab's delta-rule keys are already unit vectors)
            from triton.testing import do_bench
            from compare_gpu import fla_kernels
            x = {"q": q, "k": k, "kn": k, "v": v, "g": g, "beta": beta}
            kernel = fla_kernels()[mech]
            theirs = lambda: kernel(x)
            print(f"fla  {mech:17s} T={T:6d} B={B:3d}: {do_bench(theirs, return_mode='median'):.3f} ms", flush=True)
