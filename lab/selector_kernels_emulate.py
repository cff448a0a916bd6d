#!/usr/bin/env python3
"""Emulates block_select.cu's index logic on the host and checks it against the CPU selectors' definitions
(BlockSelectors.swift's antidiagonalBlockScores, pooledBlockScores, lastQueryAttention), written here directly in numpy.

The emulation follows the kernels step by step: blockIdx -> (b, h, group or row), the shared query rows (reversed for
XAttention, zero for t < first), warps striding over key groups / keys with lanes striding over D and a shuffle sum,
the online (max, sum) per warp merged across warps, the cached pass (threads stride over the kept row) or the
recomputed one (warps again, lane 0 adding), the atomics' target indices, and the grid-stride loops of the pooling
kernels with a small grid so that every thread takes several elements. Accumulation is float32 as on the GPU (the
order differs from the CPU's Float64, hence a tolerance); every target index is bounds-checked, so an out-of-range
index fails loudly instead of wrapping. XAttention's gemm path (linea_bsel_groups, X = Q' K'ᵀ by cuBLAS in row chunks,
linea_bsel_rowsoftmax) is emulated too, with a scratch small enough to split X into several chunks. No GPU needed. Keep it in step with block_select.cu when either changes.
Usage: python3 lab/selector_kernels_emulate.py
"""
import math
import sys

import numpy as np

THREADS, WARPS = 256, 8
NEG_INF = -math.inf


def cdiv(a, b):
    return -(-a // b)


def merge(m, l, m2, l2):
    """linea_bsel_merge."""
    mm = max(m, m2)
    if mm == NEG_INF:
        return m, l
    l = (0.0 if m == NEG_INF else l * math.exp(m - mm)) + (0.0 if m2 == NEG_INF else l2 * math.exp(m2 - mm))
    return mm, l


def warp_dot(a, b_rows_getter, D):
    """Lanes stride over D (d = lane, lane + 32, ...), each keeping a float32 partial; the xor-shuffle sums them."""
    partial = np.zeros(32, dtype=np.float32)
    for lane in range(32):
        for d in range(lane, D, 32):
            partial[lane] += np.float32(a(d)) * np.float32(b_rows_getter(d))
    return float(partial.astype(np.float32).sum(dtype=np.float32))


def put(arr, index, value):
    assert 0 <= index < arr.size, f"index {index} out of range {arr.size}"
    arr.flat[index] += np.float32(value)


# ---- the kernels, emulated ----

def emu_antidiag(q, k, bs, s, causal, scale, cached):
    B, T, Hq, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    R, C = cdiv(T, s), cdiv(S, s)
    QB, KB = cdiv(T, bs), cdiv(S, bs)
    blocks = np.zeros(B * Hq * QB * KB, dtype=np.float32)
    qf, kf = q.reshape(-1), k.reshape(-1)
    factor = np.float32(scale / s)
    for bid in range(B * Hq * R):
        r = bid % R
        bh = bid // R
        h, b = bh % Hq, bh // Hq
        hk = h // (Hq // Hkv)
        last_position = min(T - 1, r * s + s - 1) + (S - T if causal else 0)
        if last_position < 0:
            continue
        visible = min(C, last_position // s + 1) if causal else C
        first = max(0, r * s + s - T)
        qs = np.zeros(s * D, dtype=np.float32)
        for e in range(s * D):  # threads stride over s D
            t, d = e // D, e % D
            if t >= first:
                i = r * s + s - 1 - t
                assert 0 <= i < T
                qs[e] = qf[((b * T + i) * Hq + h) * D + d]

        def score(c):
            end = min(s, S - c * s)
            acc = np.float32(0)
            for t in range(first, end):
                j = c * s + t
                assert 0 <= j < S
                kr = ((b * S + j) * Hkv + hk) * D
                acc += np.float32(warp_dot(lambda d: qs[t * D + d], lambda d: kf[kr + d], D))
            return float(acc * factor)

        row = {}
        stats = []
        for w in range(WARPS):
            m, l = NEG_INF, 0.0
            for c in range(w, visible, WARPS):
                x = score(c)
                if cached:
                    row[c] = x
                m, l = merge(m, l, x, 1.0)
            stats.append((m, l))
        m, l = NEG_INF, 0.0
        for m2, l2 in stats:
            m, l = merge(m, l, m2, l2)
        inv = 1.0 / l
        base = (bh * QB + r * s // bs) * KB
        assert r * s // bs < QB
        cs = range(visible) if cached else [c for w in range(WARPS) for c in range(w, visible, WARPS)]
        for c in cs:
            x = row[c] if cached else score(c)
            assert c * s // bs < KB
            put(blocks, base + c * s // bs, math.exp(x - m) * inv)
    return blocks.reshape(B, Hq, QB, KB)


def emu_groups(x, b, hh, s, reverse, grid):
    """linea_bsel_groups: out [G, s D] of head hh in batch b, rows reversed within a group for q, zero past L."""
    B, L, H, D = x.shape
    G = cdiv(L, s)
    out = np.full(G * s * D, np.nan, dtype=np.float32)
    xf = x.reshape(-1)
    for tid in range(grid * THREADS):
        for i in range(tid, G * s * D, grid * THREADS):
            g = i // (s * D)
            e = i - g * s * D
            t, d = e // D, e % D
            row = g * s + s - 1 - t if reverse else g * s + t
            assert np.isnan(out[i])
            out[i] = xf[((b * L + row) * H + hh) * D + d] if row < L else 0.0
    return out.reshape(G, s * D)


def emu_antidiag_gemm(q, k, bs, s, causal, scale, scratch):
    """CUDABlockSelect's gemm path: per (b, kv head) K', per query head Q', row chunks of X = Q' K'[:n]ᵀ (n: the
    chunk's last row's visible groups), then linea_bsel_rowsoftmax per row into the head's blocks."""
    B, T, Hq, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    R, C = cdiv(T, s), cdiv(S, s)
    QB, KB = cdiv(T, bs), cdiv(S, bs)
    blocks = np.zeros(B * Hq * QB * KB, dtype=np.float32)
    chunk = max(1, min(R, scratch // C))
    factor = scale / s
    for b in range(B):
        for hk in range(Hkv):
            kg = emu_groups(k, b, hk, s, False, grid=2)
            for h in range(hk * (Hq // Hkv), (hk + 1) * (Hq // Hkv)):
                qg = emu_groups(q, b, h, s, True, grid=2)
                for r0 in range(0, R, chunk):
                    rows = min(chunk, R - r0)
                    last = min(T - 1, (r0 + rows - 1) * s + s - 1) + (S - T if causal else 0)
                    if last < 0:
                        continue
                    n = min(C, last // s + 1) if causal else C
                    X = (qg[r0:r0 + rows].astype(np.float64) @ kg[:n].astype(np.float64).T).astype(np.float32)  # cuBLAS, fp32
                    head = (b * Hq + h) * QB * KB
                    for bid in range(rows):  # linea_bsel_rowsoftmax
                        r = r0 + bid
                        lp = min(T - 1, r * s + s - 1) + (S - T if causal else 0)
                        if lp < 0:
                            continue
                        visible = min(n, min(C, lp // s + 1) if causal else C)
                        x = X[bid, :visible].astype(np.float64) * factor
                        p = np.exp(x - x.max())
                        p /= p.sum()
                        for c in range(visible):
                            put(blocks, head + (r * s // bs) * KB + c * s // bs, p[c])
    return blocks.reshape(B, Hq, QB, KB)


def emu_pool(x, bs, grid):
    B, L, H, D = x.shape
    nb = cdiv(L, bs)
    out = np.full(B * H * nb * D, np.nan, dtype=np.float32)
    xf = x.reshape(-1)
    total = B * H * nb * D
    for tid in range(grid * THREADS):
        for i in range(tid, total, grid * THREADS):
            d = i % D
            rest = i // D
            blk = rest % nb
            bh = rest // nb
            h, b = bh % H, bh // H
            t0, t1 = blk * bs, min(L, blk * bs + bs)
            acc = np.float32(0)
            for t in range(t0, t1):
                acc += xf[((b * L + t) * H + h) * D + d]
            assert np.isnan(out[i]), "element written twice"
            out[i] = acc / np.float32(t1 - t0)
    return out.reshape(B, H, nb, D)


def emu_pooled(q, k, bs, scale, grid):
    B, T, Hq, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    QB, KB = cdiv(T, bs), cdiv(S, bs)
    qm = emu_pool(q, bs, grid).reshape(-1)
    km = emu_pool(k, bs, grid).reshape(-1)
    scores = np.full(B * Hq * QB * KB, np.nan, dtype=np.float32)
    total = scores.size
    for tid in range(grid * THREADS):
        for i in range(tid, total, grid * THREADS):
            J = i % KB
            rest = i // KB
            I = rest % QB
            bh = rest // QB
            h, b = bh % Hq, bh // Hq
            a = (bh * QB + I) * D
            c = ((b * Hkv + h // (Hq // Hkv)) * KB + J) * D
            acc = np.float32(0)
            for d in range(D):
                acc += qm[a + d] * km[c + d]
            assert np.isnan(scores[i])
            scores[i] = np.float32(scale) * acc
    return scores.reshape(B, Hq, QB, KB)


def emu_lastq(q, k, bs, n_asked, scale, cached):
    B, T, Hq, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    n = min(n_asked, T)
    KB = cdiv(S, bs)
    first_block = (T - n) // bs
    rows = (T - 1) // bs - first_block + 1
    columns = np.zeros(B * Hq * S, dtype=np.float32)
    diagonals = np.zeros(B * Hq * S, dtype=np.float32)
    mass = np.zeros(B * Hq * rows * KB, dtype=np.float32)
    qf, kf = q.reshape(-1), k.reshape(-1)
    for bid in range(B * Hq * n):
        r = bid % n
        bh = bid // n
        h, b = bh % Hq, bh // Hq
        hk = h // (Hq // Hkv)
        i = T - n + r
        position = i + S - T
        if position < 0:
            continue
        visible = min(S, position + 1)
        mrow = (bh * rows + (i // bs - first_block)) * KB
        assert 0 <= i // bs - first_block < rows
        qs = np.array([np.float32(scale) * qf[((b * T + i) * Hq + h) * D + d] for d in range(D)], dtype=np.float32)

        def score(j):
            kr = ((b * S + j) * Hkv + hk) * D
            return warp_dot(lambda d: qs[d], lambda d: kf[kr + d], D)

        row, stats = {}, []
        for w in range(WARPS):
            m, l = NEG_INF, 0.0
            for j in range(w, visible, WARPS):
                x = score(j)
                if cached:
                    row[j] = x
                m, l = merge(m, l, x, 1.0)
            stats.append((m, l))
        m, l = NEG_INF, 0.0
        for m2, l2 in stats:
            m, l = merge(m, l, m2, l2)
        inv = 1.0 / l
        js = range(visible) if cached else [j for w in range(WARPS) for j in range(w, visible, WARPS)]
        for j in js:
            p = math.exp((row[j] if cached else score(j)) - m) * inv
            put(columns, bh * S + j, p)
            put(diagonals, bh * S + (position - j), p)
            put(mass, mrow + j // bs, p)
    return mass.reshape(B, Hq, rows, KB), columns.reshape(B, Hq, S), diagonals.reshape(B, Hq, S)


# ---- the CPU definitions (BlockSelectors.swift), directly ----

def ref_antidiag(q, k, bs, s, causal, scale):
    B, T, Hq, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    R, C = cdiv(T, s), cdiv(S, s)
    QB, KB = cdiv(T, bs), cdiv(S, bs)
    out = np.zeros((B, Hq, QB, KB))
    for b in range(B):
        for h in range(Hq):
            hk = h // (Hq // Hkv)
            for r in range(R):
                last_position = min(T - 1, r * s + s - 1) + (S - T if causal else 0)
                if last_position < 0:
                    continue
                visible = min(C, last_position // s + 1) if causal else C
                x = np.zeros(visible)
                for c in range(visible):
                    dot = 0.0
                    for t in range(s):
                        i, j = r * s + s - 1 - t, c * s + t
                        if i < T and j < S:
                            dot += float(np.dot(q[b, i, h].astype(np.float64), k[b, j, hk].astype(np.float64)))
                    x[c] = dot * scale / s
                p = np.exp(x - x.max())
                p /= p.sum()
                for c in range(visible):
                    out[b, h, r * s // bs, c * s // bs] += p[c]
    return out


def ref_pooled(q, k, bs, scale):
    B, T, Hq, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    QB, KB = cdiv(T, bs), cdiv(S, bs)
    qm = np.stack([q[:, I * bs:min(T, I * bs + bs)].astype(np.float64).mean(axis=1) for I in range(QB)], axis=2)  # [B,Hq,QB,D]
    km = np.stack([k[:, J * bs:min(S, J * bs + bs)].astype(np.float64).mean(axis=1) for J in range(KB)], axis=2)  # [B,Hkv,KB,D]
    km = np.repeat(km, Hq // Hkv, axis=1)
    return scale * np.einsum("bhid,bhjd->bhij", qm, km)


def ref_lastq(q, k, bs, n_asked, scale):
    B, T, Hq, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    n = min(n_asked, T)
    KB = cdiv(S, bs)
    first_block = (T - n) // bs
    rows = (T - 1) // bs - first_block + 1
    mass, columns, diagonals = np.zeros((B, Hq, rows, KB)), np.zeros((B, Hq, S)), np.zeros((B, Hq, S))
    for b in range(B):
        for h in range(Hq):
            hk = h // (Hq // Hkv)
            for r in range(n):
                i = T - n + r
                position = i + S - T
                if position < 0:
                    continue
                visible = min(S, position + 1)
                x = scale * (k[b, :visible, hk].astype(np.float64) @ q[b, i, h].astype(np.float64))
                p = np.exp(x - x.max())
                p /= p.sum()
                for j in range(visible):
                    columns[b, h, j] += p[j]
                    diagonals[b, h, position - j] += p[j]
                    mass[b, h, i // bs - first_block, j // bs] += p[j]
    return mass, columns, diagonals


def close(name, got, want, tol=2e-5):
    err = np.abs(got.astype(np.float64) - want).max() if want.size else 0.0
    ok = err <= tol * max(1.0, np.abs(want).max() if want.size else 1.0)
    print(f"[{'ok' if ok else 'FAILED'}] {name}: max |diff| {err:.3g}")
    return ok


def main():
    rng = np.random.default_rng(5)
    ok = True
    # (B, T, S, Hq, Hkv, D, bs, stride, causal): partial last blocks and groups, T != S both ways, grouped heads, D not a
    # multiple of 32, a stride larger than what is left of the sequence.
    for B, T, S, Hq, Hkv, D, bs, s, causal in [(1, 37, 37, 2, 1, 40, 8, 4, True), (2, 20, 45, 2, 2, 8, 8, 8, True),
                                                (1, 45, 20, 4, 2, 16, 16, 4, True), (1, 30, 30, 2, 1, 8, 8, 2, False),
                                                (1, 5, 9, 1, 1, 4, 16, 16, True), (1, 33, 21, 2, 2, 70, 4, 1, True),
                                                (1, 21, 33, 3, 1, 8, 4, 4, False)]:
        q = rng.standard_normal((B, T, Hq, D)).astype(np.float32)
        k = rng.standard_normal((B, S, Hkv, D)).astype(np.float32)
        scale = 1 / math.sqrt(D)
        label = f"B{B} T{T} S{S} Hq{Hq} Hkv{Hkv} D{D} bs{bs}"
        want = ref_antidiag(q, k, bs, s, causal, scale)
        for cached in (True, False):
            ok &= close(f"antidiag {label} stride {s} causal {causal} cached {cached}", emu_antidiag(q, k, bs, s, causal, scale, cached), want)
        for scratch in (1 << 26, 20):
            ok &= close(f"antidiag gemm {label} stride {s} causal {causal} scratch {scratch}",
                        emu_antidiag_gemm(q, k, bs, s, causal, scale, scratch), want)
        ok &= close(f"pooled {label}", emu_pooled(q, k, bs, scale, grid=1), ref_pooled(q, k, bs, scale))
        if causal:
            for n in (16, 64):
                wm, wc, wd = ref_lastq(q, k, bs, n, scale)
                for cached in (True, False):
                    gm, gc, gd = emu_lastq(q, k, bs, n, scale, cached)
                    tag = f"lastq {label} n{n} cached {cached}"
                    ok &= close(tag + " mass", gm, wm) & close(tag + " columns", gc, wc) & close(tag + " diagonals", gd, wd)
    print("all ok" if ok else "FAILURES")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
