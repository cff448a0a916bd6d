#!/usr/bin/env python3
"""Emulates chunked_kda.cu (kda's chunked tensor-core forward) on the host with numpy and checks it against an fp64
naive recurrence: the prepass per (chunk, value head) (cumulative log2 gates per channel, the intra-chunk scores
A_kk and A_qk with one reference row per 16-row block, the steep fallback that sums the diagonal block channel by
channel, the blocked inverse T = (I + L)^{-1}, w, u, the decayed q and k, the chunk's total decay) and the walk per
(64 state columns, value head) (U = u - w S, o = scale (q e^G) S + A_qk U, S <- e^{G_last} S + (k e^{G_last - G})^T U).
Every bf16 operand is rounded as the kernel rounds it (round to nearest even; fp32 values split hi + lo where the
kernel splits them); MMA products are exact sums of bf16 products accumulated in fp32. The index logic (row blocks,
masks, partial last chunk, grouped heads, reference rows) is the kernel's; `lc_ex2` is taken as exact.
Usage: python3 lab/chunked_kda_emulate.py
"""
import sys

import numpy as np

C = 64
L2E = 1.4426950408889634
STEEP = 80.0  # log2 span of a half block beyond which the reference-row factors could overflow (the kernel's test)
steep_blocks = [0, 0]  # (steep, all) 16-row blocks seen, to show which path a case took


def bf16(x):
    """Round float32 values to bf16 (nearest even), returned as float32."""
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    out = r.astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(x), out, x).astype(np.float32)


def split(x):
    """hi + lo bf16 parts of fp32 values (lc_split)."""
    x = np.asarray(x, dtype=np.float32)
    hi = bf16(x)
    lo = bf16((x - hi).astype(np.float32))
    return hi, lo


def mm(a, b):
    """A tensor-core product of bf16-valued operands, accumulated in fp32 (emulated in fp64, then rounded)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)


def mm3(a, b):
    """hi + lo operands on both sides, three passes (lo x lo dropped): lc_mma2_x3."""
    ah, al = split(a)
    bh, bl = split(b)
    return (mm(ah, bh) + mm(al, bh) + mm(ah, bl)).astype(np.float32)


def mm2a(a, b):
    """hi + lo left operand, bf16 right operand (two passes)."""
    ah, al = split(a)
    return (mm(ah, b) + mm(al, b)).astype(np.float32)


def ex2(x):
    with np.errstate(over="ignore"):
        return np.exp2(np.asarray(x, dtype=np.float32)).astype(np.float32)


def prepass(q, k, v, g, beta, scale):
    """One chunk of one value head (rows past T zero, g = 0 there). q, k [C,K] bf16 values, v [C,V] bf16, g [C,K] fp32
    natural log gates, beta [C]. Returns what the kernel stores: w bf16 [C,K], u fp32 [C,V], q 2^G and
    k 2^{G_last - G} as (hi, lo) bf16 pairs [C,K], A_qk hi, lo bf16 [C,C], gl fp32 [K] (2^{G_last})."""
    K = q.shape[1]
    G = np.cumsum((g * np.float32(L2E)).astype(np.float32), axis=0, dtype=np.float32)
    Skk = np.zeros((C, C), np.float32)
    Sqk = np.zeros((C, C), np.float32)
    for I in range(4):  # warp I: rows 16 I .. 16 I + 15
        R0 = 16 * I
        span = max(np.max(G[R0] - G[R0 + 8]), np.max(G[R0 + 8] - G[R0 + 15]))
        steep = span > STEEP
        steep_blocks[0] += int(steep)
        steep_blocks[1] += 1
        R = G[R0 if steep else R0 + 8]
        rows = slice(R0, R0 + 16)
        cols = R0 + 16  # keys 0 .. R0 + 15
        ai = ex2(G[rows] - R)
        bj = ex2(R - G[:cols])
        with np.errstate(invalid="ignore", over="ignore"):
            ak = (k[rows] * ai).astype(np.float32)
            aq = (q[rows] * ai).astype(np.float32)
            bk = (k[:cols] * bj).astype(np.float32)
        sk = mm3(ak, bk.T)
        sq = mm3(aq, bk.T)
        # The kernel's diagonal-block rules, entry by entry (no mask applied afterwards, so an index slip shows).
        Skk[rows, :cols], Sqk[rows, :cols] = sk, sq
        for ii in range(16):
            i = R0 + ii
            for j in range(R0, cols):
                if j > i:
                    Skk[i, j] = Sqk[i, j] = 0
                elif steep:
                    d = ex2(G[i] - G[j])
                    Sqk[i, j] = np.float32(np.sum(q[i].astype(np.float64) * k[j] * d))
                    Skk[i, j] = np.float32(np.sum(k[i].astype(np.float64) * k[j] * d)) if j < i else 0
                elif j == i:
                    Skk[i, j] = 0
    L = (beta[:, None] * Skk).astype(np.float32)
    Aqk = (np.float32(scale) * Sqk).astype(np.float32)
    # T = (I + L)^{-1}: diagonal blocks by fp32 forward substitution, the rest by hi + lo products, distance by distance.
    Tm = np.zeros((C, C), np.float32)
    for r in range(4):
        D = L[16 * r:16 * r + 16, 16 * r:16 * r + 16]
        a = np.zeros((16, 16), np.float32)
        for i in range(16):
            a[i] = -(D[i, :i] @ a[:i]) if i else 0
            a[i, i] = 1
        Tm[16 * r:16 * r + 16, 16 * r:16 * r + 16] = a
    Z = {}
    for r in range(4):
        for m in range(r):
            Z[r, m] = mm3(Tm[16 * r:16 * r + 16, 16 * r:16 * r + 16], L[16 * r:16 * r + 16, 16 * m:16 * m + 16])
    for d in range(1, 4):
        for r in range(d, 4):
            j = r - d
            acc = np.zeros((16, 16), np.float32)
            for m in range(j, r):
                acc += mm3(Z[r, m], Tm[16 * m:16 * m + 16, 16 * j:16 * j + 16])
            Tm[16 * r:16 * r + 16, 16 * j:16 * j + 16] = -acc
    Tb = (Tm * beta[None, :]).astype(np.float32)  # T diag(beta)
    eG = ex2(G)
    w = bf16(mm3(Tb, (k * eG).astype(np.float32)))
    ah, al = split(Tb)
    u = (mm(ah, v) + mm(al, v)).astype(np.float32)
    qg = split(q * eG)
    kd = split(k * ex2(G[C - 1] - G))
    Ah, Al = split(Aqk)
    return w, u, qg, kd, Ah, Al, ex2(G[C - 1])


def kda_chunked(q, k, v, g, beta, h0, scale, segments=1):
    """The kernels on [B,T,H,K] q, k (bf16 values), v [B,T,HV,V], g [B,T,HV,K], beta [B,T,HV], h0 [B,HV,K,V]:
    the prepass per chunk, then (segments > 1, cut as CUDAChunkedKDA.Plan cuts) the end-state pass per segment (end
    state from zero, and the transition from the identity with u = 0), the scan S_{p+1} = M_p S_p + E_p in fp32, and
    the walk of every segment from its start state."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    group = HV // H
    NC = (T + C - 1) // C
    per = (NC + segments - 1) // segments
    P = (NC + per - 1) // per
    o = np.zeros((B, T, HV, V), np.float32)
    ht = np.zeros((B, HV, K, V), np.float32)

    def rows(x, c):  # the chunk's rows, zero past T (cp.async zero-fill, lc_gate's 0)
        out = np.zeros((C,) + x.shape[1:], np.float32)
        n = min(C, T - c * C)
        out[:n] = x[c * C:c * C + n]
        return out

    def step(S, pre, u_zero=False):
        """One chunk of the walk (the end-state pass when u_zero or no outputs are wanted): (S after, o^T rows)."""
        w, u, qg, kd, Ah, Al, gl = pre
        # Transposed in the kernel (S^T as the hi + lo left operand); the same products.
        Sh, Sl = split(S)
        U = ((0 if u_zero else u) - (mm(w, Sh) + mm(w, Sl))).astype(np.float32)
        Ot = (np.float32(scale) * (mm(qg[0], Sh) + mm(qg[0], Sl) + mm(qg[1], Sh))).astype(np.float32)
        Uh, Ul = split(U)
        Ot = (Ot + mm(Ah, Uh) + mm(Ah, Ul) + mm(Al, Uh)).astype(np.float32)
        S = (S * gl[:, None] + mm(kd[0].T, Uh) + mm(kd[0].T, Ul) + mm(kd[1].T, Uh)).astype(np.float32)
        return S, Ot

    for b in range(B):
        for h in range(HV):
            hk = h // group
            pre = [prepass(rows(q[b, :, hk], c), rows(k[b, :, hk], c), rows(v[b, :, h], c), rows(g[b, :, h], c),
                           rows(beta[b, :, h], c), scale) for c in range(NC)]
            start = [h0[b, h].astype(np.float32).copy() if h0 is not None else np.zeros((K, V), np.float32)]
            if P > 1:
                E, M = [], []
                for p in range(P - 1):  # lk_kda_end: the last segment's blocks return at once
                    Se, Sm = np.zeros((K, V), np.float32), np.eye(K, dtype=np.float32)
                    for c in range(p * per, min(NC, (p + 1) * per)):
                        Se = step(Se, pre[c])[0]
                        Sm = step(Sm, pre[c], u_zero=True)[0]
                    E.append(Se)
                    M.append(Sm)
                for p in range(P - 1):  # linea_chunk_seg_scan_delta (fp32 sums)
                    start.append((mm(M[p], start[p]) + E[p]).astype(np.float32))
            for p in range(P):
                S = start[p]
                for c in range(p * per, min(NC, (p + 1) * per)):
                    S, Ot = step(S, pre[c])
                    n = min(C, T - c * C)
                    o[b, c * C:c * C + n, h] = Ot[:n]
            ht[b, h] = S
    return o, ht


def kda_reference(q, k, v, g, beta, h0, scale):
    """fp64 naive recurrence (fla's fused_recurrent_kda semantics)."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    group = HV // H
    o = np.zeros((B, T, HV, V))
    ht = np.zeros((B, HV, K, V))
    for b in range(B):
        for h in range(HV):
            S = h0[b, h].astype(np.float64).copy() if h0 is not None else np.zeros((K, V))
            for t in range(T):
                kt = k[b, t, h // group].astype(np.float64)
                S *= np.exp(g[b, t, h].astype(np.float64))[:, None]
                vn = beta[b, t, h] * (v[b, t, h] - kt @ S)
                S += np.outer(kt, vn)
                o[b, t, h] = scale * (q[b, t, h // group].astype(np.float64) @ S)
            ht[b, h] = S
    return o, ht


def case(name, B, T, H, HV, K, V, gate, h0=True, seed=0, mixed=False, repo=False, segments=1):
    """One comparison. Default inputs as kda layers feed it (q, k L2-normalized, sigmoid beta, a unit initial state);
    `repo`: as RecurrenceInputs.random draws them for the Swift GPU tests (q N(0, 1) unnormalized, beta U(0, 1),
    initial state N(0, 0.1^2))."""
    steep_blocks[0] = steep_blocks[1] = 0
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, T, H, K)).astype(np.float32)
    k = rng.standard_normal((B, T, H, K)).astype(np.float32)
    if not repo:
        q /= np.linalg.norm(q, axis=-1, keepdims=True)  # kda runs with q, k L2-normalized
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    q, k = bf16(q), bf16(k)
    v = bf16(rng.standard_normal((B, T, HV, V)).astype(np.float32))
    g = (-rng.uniform(gate[0], gate[1], (B, T, HV, K))).astype(np.float32)
    if mixed:  # steep gates in half of the channels only, mild ones in the rest
        g[..., ::2] = -rng.uniform(0.001, 0.1, g[..., ::2].shape)
    if repo:
        beta = rng.uniform(0, 1, (B, T, HV)).astype(np.float32)
    else:
        beta = (1 / (1 + np.exp(-rng.standard_normal((B, T, HV))))).astype(np.float32)
    s0 = (rng.standard_normal((B, HV, K, V)) * (0.1 if repo else 1)).astype(np.float32) if h0 else None
    scale = K ** -0.5
    o, ht = kda_chunked(q, k, v, g, beta, s0, scale, segments)
    ro, rh = kda_reference(q, k, v, g, beta, s0, scale)
    rel = lambda a, r: float(np.sqrt(np.mean((a - r) ** 2)) / max(np.sqrt(np.mean(r ** 2)), 1e-30))
    eo, eh = rel(o, ro), rel(ht, rh)
    # Rounding o to bf16 (the kernel's bf16 output) adds about 2^-9 / sqrt(3) rel-RMS on its own; not included here.
    finite = bool(np.isfinite(o).all() and np.isfinite(ht).all())
    chunk_sum = float(np.min(np.cumsum(g[..., :min(T, C), :], axis=1)[:, -1]))
    ok = finite and eo <= 2e-3 and eh <= 2e-3
    print(f"{'ok ' if ok else 'BAD'} {name:44s} o rel-RMS {eo:.2e}  state rel-RMS {eh:.2e}  finite {finite}  "
          f"min first-chunk log decay {chunk_sum:.0f}  steep blocks {steep_blocks[0]}/{steep_blocks[1]}")
    return ok


def main():
    cases = [
        ("B2 T200 H2 K64 V64 mild", 2, 200, 2, 2, 64, 64, (0.001, 0.1)),
        ("B1 T256 H1 HV2 K128 V128 mild", 1, 256, 1, 2, 128, 128, (0.001, 0.1)),
        ("B1 T130 H2 HV4 K64 V128 no h0", 1, 130, 2, 4, 64, 128, (0.01, 0.5), False),
        ("B1 T192 H1 K128 V64 moderate", 1, 192, 1, 1, 128, 64, (0.1, 1.0)),
        ("B1 T150 H1 K64 V64 steep (~-190/chunk)", 1, 150, 1, 1, 64, 64, (1.0, 5.0)),
        ("B1 T100 H1 HV2 K64 V64 very steep", 1, 100, 1, 2, 64, 64, (5.0, 12.0)),
        ("B1 T1 H1 K64 V64 one token", 1, 1, 1, 1, 64, 64, (0.0, 0.1)),
        ("B1 T64 H1 HV2 K128 V128 mixed steep", 1, 64, 1, 2, 128, 128, (5.0, 12.0), True, 1, True),
        ("B2 T70 H1 K128 V64 steep no h0", 2, 70, 1, 1, 128, 64, (6.0, 9.0), False, 2),
        ("B1 T100 H1 K64 V64 extreme (2^-30/token)", 1, 100, 1, 1, 64, 64, (15.0, 25.0), True, 3),
        # As the Swift GPU tests draw their inputs (CUDAChunkedKDATests).
        ("repo: B3 T63 H2 K128 V128 g in [-1, 0)", 3, 63, 2, 2, 128, 128, (1e-4, 1.0), True, 4, False, True),
        ("repo: B2 T130 H2 K128 V128 g in [-20, 0)", 2, 130, 2, 2, 128, 128, (1e-4, 20.0), True, 5, False, True),
        ("repo: B1 T300 H1 HV4 K128 V64 g in [-0.1, 0)", 1, 300, 1, 4, 128, 64, (1e-4, 0.1), False, 6, False, True),
        # Split sequences (the end-state pass, the scan, the walk from the start states): an even and an uneven cut.
        ("segments 4: B1 T1000 H1 K64 V64 mild", 1, 1000, 1, 1, 64, 64, (1e-4, 0.1), True, 7, False, True, 4),
        ("segments 3: B1 T530 H1 HV2 K128 V64 no h0", 1, 530, 1, 2, 128, 64, (1e-4, 1.0), False, 8, False, True, 3),
        ("segments 2: B1 T300 H1 K64 V128 steep", 1, 300, 1, 1, 64, 128, (1e-4, 20.0), True, 9, False, True, 2),
    ]
    if len(sys.argv) > 1 and sys.argv[1] == "quick":
        cases = cases[:1]
    good = all(case(*c) for c in cases)
    print("all ok" if good else "FAILED")
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
