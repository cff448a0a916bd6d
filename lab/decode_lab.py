#!/usr/bin/env python3
"""Kernel lab for the CUDA recurrent decode steps, for the GPU machine (python3 with torch and cupy; no Swift needed).

Compiles the `recurrent_step` source straight out of Sources/LineaCUDA/Kernels/cu/recurrent_step.cu with CuPy's
NVRTC, launches it the way CUDARecurrentStep does, checks one step of every mechanism against an fp64 step, and times
the issue's shape (bf16 inputs, B = 64, H = 32, K = V = 128, fp32 state in place) against a device-to-device copy of
the state measured in the same process (bytes moved: the state read once and written once, as the copy does).

  python3 lab/decode_lab.py                          # check, then time the six mechanisms
  python3 lab/decode_lab.py --variants "=;-DLINEA_NW=16"   # several NVRTC define sets, side by side
"""
import argparse, os, re, time
import numpy as np, torch, cupy as cp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MECHS = ["linear_attn", "retention", "simple_gla", "gla", "delta_rule", "gated_delta_rule"]
ap = argparse.ArgumentParser()
ap.add_argument("--variants", default="=", help="';'-separated define sets ('=' for none), e.g. '=;-DLINEA_NW=16'")
ap.add_argument("--mech", default=",".join(MECHS))
ap.add_argument("--B", type=int, default=64)
ap.add_argument("--H", type=int, default=32)
ap.add_argument("--reps", type=int, default=30)
ap.add_argument("--rounds", type=int, default=3, help="rounds over the variants (interleaved, to see the spread)")
args = ap.parse_args()

source = open(os.path.join(ROOT, "Sources/LineaCUDA/Kernels/cu/recurrent_step.cu")).read()
ptr = lambda t: np.uint64(t.data_ptr()) if t is not None else np.uint64(0)
K = V = 128


def compile_variant(defines):
    opts = ("-std=c++17", "-arch=sm_90", "--use_fast_math") + tuple(d for d in defines.split() if d != "=")
    m = cp.RawModule(code=source, options=opts)
    m.compile()
    nw = int(re.search(r"-DLINEA_NW=(\d+)", defines).group(1)) if "LINEA_NW" in defines else 8
    return m.get_function("linea_rec_step_bf16_k128_v4"), nw


def inputs(BH, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=gen)
    q, k, v = (r(BH, K) * 0.3).bfloat16(), torch.nn.functional.normalize(r(BH, K), dim=-1).bfloat16(), r(BH, V).bfloat16()
    return q, k, v, (-torch.rand(BH, K, device="cuda", generator=gen) * 0.5).bfloat16(), torch.rand(BH, device="cuda", generator=gen).bfloat16()


def launch(f, nw, mech, q, k, v, g, beta, state, o, H, scale):
    BH = q.shape[0]
    f((BH, 1, 1), (32 * nw, 1, 1), (np.int32(MECHS.index(mech)), ptr(q), ptr(k), ptr(v), ptr(g), ptr(beta), ptr(state), ptr(o),
                                   np.int32(K), np.int32(V), np.int32(H), np.int32(1), np.float32(scale)))


def reference(mech, q, k, v, g, beta, S, H, scale):
    q, k, v, g, beta, S = (x.double().cpu().numpy() for x in (q, k, v, g, beta, S))
    BH = q.shape[0]
    out = np.empty((BH, V))
    for bh in range(BH):
        s = S[bh]
        if mech == "retention": s = s * (1 - 2.0 ** (-5 - bh % H))
        if mech in ("simple_gla", "gated_delta_rule"): s = s * np.exp(g[bh, 0])  # scalar gate: first element of g row
        if mech == "gla": s = s * np.exp(g[bh])[:, None]
        if mech in ("delta_rule", "gated_delta_rule"):
            s = s + beta[bh] * np.outer(k[bh], v[bh] - k[bh] @ s)
        else:
            s = s + np.outer(k[bh], v[bh])
        S[bh] = s
        out[bh] = (scale * q[bh]) @ s
    return out, S


variants = args.variants.split(";")
kernels = [compile_variant(d) for d in variants]
scale = K ** -0.5
# Check: one step of every mechanism on a small batch, every variant (scalar gates read g[bh] of a [BH] tensor).
for (f, nw), name in zip(kernels, variants):
    worst = 0.0
    for mech in args.mech.split(","):
        BH, H = 12, 4
        q, k, v, g, beta = inputs(BH, 1)
        gs = g if mech == "gla" else g[:, 0].contiguous()
        S = torch.randn(BH, K, V, device="cuda") * 0.2
        o = torch.empty(BH, V, device="cuda")
        expect_o, expect_S = reference(mech, q, k, v, g, beta, S.clone(), H, scale)
        launch(f, nw, mech, q, k, v, gs, beta, S, o, H, scale)
        torch.cuda.synchronize()
        for got, want in ((o, expect_o), (S, expect_S)):
            got = got.double().cpu().numpy()
            rel = np.sqrt(((got - want) ** 2).mean() / (want ** 2).mean())
            worst = max(worst, rel)
            if rel > 1e-5: raise SystemExit(f"FAIL {name} {mech}: rel RMS {rel:.2e}")
    print(f"check {name}: every mechanism within rel RMS {worst:.1e} of fp64", flush=True)

BH, H = args.B * args.H, args.H
state = torch.randn(BH, K, V, device="cuda") * 0.01
copy_dst = torch.empty_like(state)
nbytes = state.numel() * 4
o = torch.empty(BH, V, device="cuda")
q, k, v, g, beta = inputs(BH, 2)
gs = g[:, 0].contiguous()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)


def timed(fn):
    for _ in range(3): fn()
    ts = []
    for _ in range(args.reps):
        start.record(); fn(); end.record(); end.synchronize()
        ts.append(start.elapsed_time(end))
    return float(np.median(ts))


print(f"B={args.B} H={H} K={K} V={V} bf16 inputs, fp32 state {nbytes / 2**20:.0f} MiB; median of {args.reps}; "
      f"share = bytes/s against the d2d copy of the state timed just before", flush=True)
for rnd in range(args.rounds):
    copy_ms = timed(lambda: copy_dst.copy_(state))
    print(f"round {rnd}: d2d copy {copy_ms:.4f} ms {2 * nbytes / copy_ms / 1e6:.0f} GB/s", flush=True)
    for (f, nw), name in zip(kernels, variants):
        row = []
        for mech in args.mech.split(","):
            ms = timed(lambda: launch(f, nw, mech, q, k, v, g if mech == "gla" else gs, beta, state, o, H, scale))
            row.append(f"{mech} {ms:.4f} ({copy_ms / ms * 100:.0f}%)")
        print(f"  [{name}] " + "; ".join(row), flush=True)
