#!/usr/bin/env python3
"""Lane-level check of chunked_kda.cu's fragment indexing (no GPU): the kernels' per-lane index expressions ported
line by line, over emulated ldmatrix (x4, .trans), mma.sync m16n8k16 (row.col) and shuffles, with shared-memory tiles
addressed through the kernels' byte offsets (lc_b_off, nOff, pOff, kOff, the A-fragment offsets). Values stay fp64 and
lc_split gives (x, 0), so every result must match the plain matrix formula to ~1e-12: what is checked is which element
goes where, not rounding (lab/chunked_kda_emulate.py checks the numerics). Covered: lk_kda_prep's cumulative gates (row groups), its scores (reference rows,
the steep direct sums, the masks, L and A_qk as stored), its product (T diag(beta) times k 2^G or v, with the stored
layout of w and u), and one chunk of lk_kda_walk (U, o with the lane-pair shuffle of its store, the state update with
the per-key decay) and of lk_kda_end's transition blocks.
Usage: python3 lab/chunked_kda_lanes.py
"""
import sys

import numpy as np

C = 64
LANES = np.arange(32)
GQ, TQ = LANES >> 2, LANES & 3


class Smem:
    """A [rows][ld] tile of 2-byte elements at a byte base, addressed as the kernels address shared memory."""

    def __init__(self, data, ld, esize=2):
        self.ld, self.esize = ld, esize
        self.a = np.zeros((data.shape[0], ld))
        self.a[:, :data.shape[1]] = data

    def at(self, byte):
        e = byte // self.esize
        return self.a[e // self.ld, e % self.ld]

    def row8(self, byte):  # the 8 consecutive elements an ldmatrix row address names
        e = byte // self.esize
        assert e % self.ld + 8 <= self.ld, "ldmatrix row crosses the padded row"
        return self.a[e // self.ld, e % self.ld:e % self.ld + 8]


def ldsm(tile, addr, trans=False):
    """ldmatrix.x4 (.trans): addr[lane] a byte offset into tile; returns r[4][32][2] (the two b16 halves per lane)."""
    r = np.zeros((4, 32, 2))
    for m in range(4):
        M = np.stack([tile.row8(addr[8 * m + i]) for i in range(8)])  # matrix m: rows from lanes 8m .. 8m + 7
        for l in range(32):
            if trans:
                r[m, l] = M[2 * (l & 3), l >> 2], M[2 * (l & 3) + 1, l >> 2]
            else:
                r[m, l] = M[l >> 2, 2 * (l & 3)], M[l >> 2, 2 * (l & 3) + 1]
    return r


def mma(c, a, b0, b1):
    """mma.sync m16n8k16 row.col: c[4][32] += A B with a[4][32][2], b0, b1 [32][2] as the PTX fragment layout says."""
    A = np.zeros((16, 16))
    B = np.zeros((16, 8))
    for l in range(32):
        g, t = l >> 2, l & 3
        A[g, 2 * t:2 * t + 2] = a[0][l]
        A[g + 8, 2 * t:2 * t + 2] = a[1][l]
        A[g, 2 * t + 8:2 * t + 10] = a[2][l]
        A[g + 8, 2 * t + 8:2 * t + 10] = a[3][l]
        B[2 * t:2 * t + 2, g] = b0[l]
        B[2 * t + 8:2 * t + 10, g] = b1[l]
    D = A @ B
    for l in range(32):
        g, t = l >> 2, l & 3
        c[0][l] += D[g, 2 * t]
        c[1][l] += D[g, 2 * t + 1]
        c[2][l] += D[g + 8, 2 * t]
        c[3][l] += D[g + 8, 2 * t + 1]


def mma2(c0, c1, a, b):
    mma(c0, a, b[0], b[1])
    mma(c1, a, b[2], b[3])


def split_a(s0, s1):
    """lc_split_a with lo = 0: the A fragment of two accumulator n-tiles."""
    a = np.zeros((4, 32, 2))
    a[0] = np.stack([s0[0], s0[1]], 1)
    a[1] = np.stack([s0[2], s0[3]], 1)
    a[2] = np.stack([s1[0], s1[1]], 1)
    a[3] = np.stack([s1[2], s1[3]], 1)
    return a


def acc(n):
    return np.zeros((n, 4, 32))


def b_off(ld):
    """lc_b_off(ld, lane) per lane (bytes)."""
    return ((((LANES >> 3) & 1) * 8 + (LANES & 7)) * ld + (LANES >> 4) * 8) * 2


def walk_chunk(K, BV, S, qg, kd, w, u, Aqk, gl, scale, V, v0, trans=False, n_valid=C):
    """One chunk of lk_kda_walk (or, trans, of lk_kda_end's transition blocks: u = 0, no outputs) for the block's BV
    columns from v0: returns (o [64][BV] as stored, S after [K][BV])."""
    LK, LU, LP, KN = K + 8, BV + 4, C + 8, K // 8
    mat, r8 = LANES >> 3, LANES & 7
    tQ, tK, tW, tP = Smem(qg, LK), Smem(kd, LK), Smem(w, LK), Smem(Aqk, LP)
    nOff = ((mat >> 1) * 8 * LK + r8 * LK + (mat & 1) * 8) * 2
    pOff = ((mat >> 1) * 8 * LP + r8 * LP + (mat & 1) * 8) * 2
    kOff = b_off(LK)
    o = np.full((C, BV), np.nan)
    S_out = np.zeros((K, BV))
    for warp in range(BV // 16):
        col0 = 16 * warp
        St = acc(KN)
        for n in range(KN):
            for e in range(4):
                St[n][e] = S[8 * n + 2 * TQ + (e & 1), col0 + GQ + 8 * (e >> 1)]
        Ut, Ot = acc(8), acc(8)
        for ks in range(K // 16):
            ah = split_a(St[2 * ks], St[2 * ks + 1])
            for np_ in range(4):
                bf = ldsm(tW, nOff + (np_ * 16 * LK + ks * 16) * 2)
                mma2(Ut[2 * np_], Ut[2 * np_ + 1], ah, bf)
                bf = ldsm(tQ, nOff + (np_ * 16 * LK + ks * 16) * 2)
                mma2(Ot[2 * np_], Ot[2 * np_ + 1], ah, bf)
        for n in range(8):
            j = 8 * n + 2 * TQ
            for e in range(4):
                uu = 0 if trans else u[j + (e & 1), col0 + GQ + 8 * (e >> 1)]
                Ut[n][e] = uu - Ut[n][e]
                Ot[n][e] *= scale
        for kk in range(4):
            uh = split_a(Ut[2 * kk], Ut[2 * kk + 1])
            for np_ in range(4):
                if np_ < kk:
                    continue
                bh = ldsm(tP, pOff + (np_ * 16 * LP + kk * 16) * 2)
                mma2(Ot[2 * np_], Ot[2 * np_ + 1], uh, bh)
        # The store: lanes gq and gq ^ 1 trade one value of each pair (shfl_xor by 4 lanes).
        odd = GQ & 1
        for n in range(8):
            tc = 8 * n + 2 * TQ + odd
            for hh in range(2):
                lo, hi = Ot[n][2 * hh], Ot[n][2 * hh + 1]
                send = np.where(odd == 1, lo, hi)
                other = send[LANES ^ 4]
                x0, x1 = np.where(odd == 1, other, lo), np.where(odd == 1, hi, other)
                for l in range(32):
                    if tc[l] >= n_valid:
                        continue
                    col = col0 + (GQ[l] & ~1) + 8 * hh
                    assert np.isnan(o[tc[l], col]) and np.isnan(o[tc[l], col + 1]), "o element stored twice"
                    o[tc[l], col], o[tc[l], col + 1] = x0[l], x1[l]
        for n in range(KN):
            d0, d1 = gl[8 * n + 2 * TQ], gl[8 * n + 2 * TQ + 1]
            St[n][0] *= d0
            St[n][1] *= d1
            St[n][2] *= d0
            St[n][3] *= d1
        for kk in range(4):
            ah = split_a(Ut[2 * kk], Ut[2 * kk + 1])
            for np_ in range(K // 16):
                bk = ldsm(tK, kOff + (kk * 16 * LK + np_ * 16) * 2, trans=True)
                mma2(St[2 * np_], St[2 * np_ + 1], ah, bk)
        for n in range(KN):  # lc_st_store
            for e in range(4):
                S_out[8 * n + 2 * TQ + (e & 1), col0 + GQ + 8 * (e >> 1)] = St[n][e]
    return o, S_out


def prep_scores(K, q, k, G, beta, scale):
    """lk_kda_prep's rows(): L (beta_i A_kk, strictly lower) and A_qk as written (G in log2 units)."""
    LK, LG = K + 8, K + 4
    L = np.full((C, C), np.nan)
    Aq = np.full((C, C), np.nan)
    steeps = 0
    for II in range(4):
        R0, NT = 16 * II, 2 * II + 2
        span = max(np.max(G[R0] - G[R0 + 8]), np.max(G[R0 + 8] - G[R0 + 15]))
        steep = span > 80
        steeps += steep
        Rg = G[R0 if steep else R0 + 8]
        sk, sq = acc(NT), acc(NT)
        for ks in range(K // 16):
            cA = ks * 16 + 2 * TQ
            qa, ka = np.zeros((4, 32, 2)), np.zeros((4, 32, 2))
            for q4 in range(4):
                i, cc = R0 + GQ + 8 * (q4 & 1), cA + 8 * (q4 >> 1)
                for h in range(2):
                    f = f32(2.0 ** (G[i, cc + h] - Rg[cc + h]))
                    qa[q4][:, h] = f32(q[i, cc + h] * f)
                    ka[q4][:, h] = f32(k[i, cc + h] * f)
            for nt in range(NT):
                j = nt * 8 + GQ
                b0 = np.stack([f32(k[j, cA + h] * f32(2.0 ** (Rg[cA + h] - G[j, cA + h]))) for h in range(2)], 1)
                b1 = np.stack([f32(k[j, cA + 8 + h] * f32(2.0 ** (Rg[cA + 8 + h] - G[j, cA + 8 + h]))) for h in range(2)], 1)
                with np.errstate(over="ignore", invalid="ignore"):
                    mma(sq[nt], qa, b0, b1)
                    mma(sk[nt], ka, b0, b1)
        for nt in range(2 * II, NT):
            for e in range(4):
                for l in range(32):
                    i, j = R0 + GQ[l] + 8 * (e >> 1), nt * 8 + 2 * TQ[l] + (e & 1)
                    if j > i:
                        sq[nt][e][l] = sk[nt][e][l] = 0
                    elif steep:
                        d = 2.0 ** (G[i] - G[j])
                        sq[nt][e][l] = np.sum(q[i] * k[j] * d)
                        sk[nt][e][l] = np.sum(k[i] * k[j] * d) if j < i else 0
                    elif j == i:
                        sk[nt][e][l] = 0
        for nt in range(8):
            for r in range(2):
                i, j = R0 + GQ + 8 * r, nt * 8 + 2 * TQ
                for l in range(32):
                    x = (sk[nt][2 * r][l], sk[nt][2 * r + 1][l]) if nt < NT else (0, 0)
                    L[i[l], j[l]:j[l] + 2] = beta[i[l]] * np.array(x)
                    y = (sq[nt][2 * r][l], sq[nt][2 * r + 1][l]) if nt < NT else (0, 0)
                    Aq[i[l], j[l]:j[l] + 2] = scale * np.array(y)
    return L, Aq, steeps


def prep_product(K, N, Tm, beta, X):
    """lk_kda_prep's product(): rows of T diag(beta) times the [64][N] tile X (k 2^G or v), as stored."""
    ldx = N + 8
    tX = Smem(X, ldx)
    xh = b_off(ldx)
    out = np.full((C, N), np.nan)
    for warp in range(4):
        r0 = 16 * warp
        a_ = acc(N // 8)
        for kk in range(warp + 1):
            ah = np.zeros((4, 32, 2))
            for q4 in range(4):
                i, j = r0 + GQ + 8 * (q4 & 1), kk * 16 + 2 * TQ + 8 * (q4 >> 1)
                ah[q4] = np.stack([Tm[i, j] * beta[j], Tm[i, j + 1] * beta[j + 1]], 1)
            for np_ in range(N // 16):
                bx = ldsm(tX, xh + (kk * 16 * ldx + np_ * 16) * 2, trans=True)
                mma2(a_[2 * np_], a_[2 * np_ + 1], ah, bx)
        for r in range(2):
            t = r0 + GQ + 8 * r
            for nt in range(N // 8):
                for l in range(32):
                    col = nt * 8 + 2 * TQ[l]
                    out[t[l], col:col + 2] = a_[nt][2 * r][l], a_[nt][2 * r + 1][l]
    return out


def f32(x):
    """fp32 range (what overflows in the kernel's fp32 factors and operands becomes inf here too), fp64 precision."""
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.asarray(x, np.float64)
        return np.where(np.abs(x) > np.finfo(np.float32).max, np.copysign(np.inf, x), x)


def prep_gates(K, g, n_valid):
    """lk_kda_prep's cumulative gates: 128 threads, thread (grp, gcol) sums its RPT rows of 4 channels, then adds the
    earlier row groups' totals; rows at or past n_valid read 0. Returns G [64][K] (log2 units)."""
    CPR = K // 4
    RG = 128 // CPR
    RPT = C // RG
    G = np.full((C, K), np.nan)
    Tot = np.zeros((RG, K))
    runs = {}
    for tid in range(128):
        grp, gcol = tid // CPR, (tid % CPR) * 4
        srun, out = np.zeros(4), []
        for m in range(RPT):
            t = grp * RPT + m
            srun = srun + (g[t, gcol:gcol + 4] * 1.4426950408889634 if t < n_valid else 0)
            out.append(srun)
        Tot[grp, gcol:gcol + 4] = srun
        runs[tid] = out
    for tid in range(128):
        grp, gcol = tid // CPR, (tid % CPR) * 4
        off = Tot[:grp, gcol:gcol + 4].sum(0)
        for m in range(RPT):
            assert np.isnan(G[grp * RPT + m, gcol]).all(), "G element written twice"
            G[grp * RPT + m, gcol:gcol + 4] = runs[tid][m] + off
    return G


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def main():
    rng = np.random.default_rng(0)
    ok = True
    for K, BV, V, gates in [(64, 64, 64, (0.0, 1.0)), (128, 128, 128, (0.0, 1.0)), (64, 128, 128, (5.0, 16.0)),
                            (128, 64, 128, (8.0, 20.0))]:
        q, k = rng.standard_normal((C, K)), rng.standard_normal((C, K)) / np.sqrt(K)
        v = rng.standard_normal((C, V))
        beta = rng.uniform(0, 1, C)
        G = np.cumsum(-rng.uniform(*gates, (C, K)), axis=0)  # log2 units, as the kernel's G
        scale = K ** -0.5
        L, Aq, steeps = prep_scores(K, q, k, G, beta, scale)
        D = 2.0 ** np.clip(G[:, None, :] - G[None, :, :], -1e4, 1e4)  # [i, j, c]
        want_kk = beta[:, None] * np.einsum("ic,jc,ijc->ij", k, k, np.where(np.tril(np.ones((C, C)), -1)[..., None] > 0, D, 0))
        want_qk = scale * np.einsum("ic,jc,ijc->ij", q, k, np.where(np.tril(np.ones((C, C)))[..., None] > 0, D, 0))
        e1, e2 = rel(L, want_kk), rel(Aq, want_qk)
        Tm = np.linalg.inv(np.eye(C) + want_kk)
        kg = k * 2.0 ** G
        w = prep_product(K, K, Tm, beta, kg)
        u = prep_product(K, V, Tm, beta, v)
        e3 = rel(w, Tm @ (beta[:, None] * kg))
        e4 = rel(u, Tm @ (beta[:, None] * v))
        # One walk chunk for the V slice at v0 (the last slice), with the stored prepass outputs.
        v0 = V - BV
        S = rng.standard_normal((K, V))
        gl = 2.0 ** G[-1]
        kd = k * 2.0 ** (G[-1] - G)
        qg = q * 2.0 ** G
        n_valid = 50
        o, S1 = walk_chunk(K, BV, S[:, v0:], qg, kd, w, u[:, v0:], want_qk, gl, scale, V, v0, n_valid=n_valid)
        U = u - w @ S
        want_o = scale * qg @ S + want_qk @ U
        want_S = gl[:, None] * S + kd.T @ U
        e5 = rel(o[:n_valid], want_o[:n_valid, v0:])
        e6 = rel(S1, want_S[:, v0:])
        unstored = bool(np.isnan(o[n_valid:]).all() and not np.isnan(o[:n_valid]).any())
        # lk_kda_end's transition block: the identity's columns with u = 0.
        _, M = walk_chunk(K, min(K, 64), np.eye(K)[:, :min(K, 64)], qg, kd, w, u, want_qk, gl, scale, V, 0, trans=True)
        e7 = rel(M, (np.diag(gl) - kd.T @ w)[:, :min(K, 64)])
        graw = -rng.uniform(0, 1, (C, K))
        Gk = prep_gates(K, graw, 50)
        e8 = rel(Gk, np.cumsum(np.where(np.arange(C)[:, None] < 50, graw, 0), axis=0) * 1.4426950408889634)
        errs = [e1, e2, e3, e4, e5, e6, e7, e8]
        good = max(errs) < 1e-9 and unstored
        ok &= good
        print(f"{'ok ' if good else 'BAD'} K{K} V{V} BV{BV} log2 gates/token in -{gates}: steep blocks {steeps}/4; max rel err "
              f"G {e8:.1e} L {e1:.1e} A_qk {e2:.1e} w {e3:.1e} u {e4:.1e} o {e5:.1e} S {e6:.1e} M {e7:.1e}; rows past T unstored {unstored}")
    print("all ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
