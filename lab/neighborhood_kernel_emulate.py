#!/usr/bin/env python3
"""Emulates attention_neighborhood.cu's index arithmetic on the host (CUDANeighborhood.tileShape, the block -> tile
decode, the key box, each row's windows, the key tiles' tokens, the visibility test) and checks that every query is
written by exactly one block and sees exactly its neighborhood, each key once, against compare_neighborhood_gpu.py's
mask rules (which match Linea's CPU reference). No GPU needed; it checks indices, not the softmax or the warps.
Keep it in step with the kernel when either changes. Usage: python3 lab/neighborhood_kernel_emulate.py
"""
import itertools, os, random, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_neighborhood_gpu import axis_windows

def tile_shape(n):
    t = [1, 1, 1]; grew = True
    while grew:
        grew = False
        for a in (2, 1, 0):
            if t[0]*t[1]*t[2]*2 <= 64 and t[a] < n[a]:
                t[a] = min(2*t[a], n[a]); grew = True
    return t

def cdiv(a, b): return -(-a // b)

def window(xi, n, k, s, causal):
    if causal:
        leader = min(xi // s * s + s - 1, n - 1); return max(leader - k + 1, 0), xi + 1
    leader = min(xi // s * s + s // 2, n - 1); start = min(max(leader - k // 2, 0), n - k); return start, start + k

def emulate(spatial, kernel, stride, dil, causal):
    r = len(spatial); pad = 3 - r
    L = [1]*pad + spatial; K = [1]*pad + kernel; S = [1]*pad + stride; G = [1]*pad + dil; C = [False]*pad + causal
    T = tile_shape([cdiv(L[a], G[a]) for a in range(3)])
    NT = [cdiv(cdiv(L[a], G[a]), T[a]) for a in range(3)]
    blocks = 1
    for a in range(3): blocks *= G[a] * NT[a]
    N = L[0]*L[1]*L[2]
    seen = {}
    written = []
    for bx in range(blocks):
        t = bx; g = [0]*3; x0 = [0]*3; n = [0]*3
        for a in (2, 1, 0):
            per = G[a]*NT[a]; ti = t % per; t //= per
            g[a] = ti // NT[a]; x0[a] = (ti % NT[a]) * T[a]; n[a] = (L[a] - g[a] + G[a] - 1) // G[a]
        if any(x0[a] >= n[a] for a in range(3)): continue
        bs = [0]*3; nb = [0]*3; total = 1
        for a in range(3):
            x1 = min(x0[a] + T[a], n[a]) - 1
            s0, _ = window(x0[a], n[a], K[a], S[a], C[a]); _, e1 = window(x1, n[a], K[a], S[a], C[a])
            bs[a] = s0; nb[a] = e1 - s0; total *= nb[a]
        Win = []; Tok = []
        for row in range(64):
            c = [row // (T[2]*T[1]), (row // T[2]) % T[1], row % T[2]]
            valid = c[0] < T[0]; w = []; real = []
            for a in range(3):
                xi = x0[a] + c[a]; valid = valid and xi < n[a]
                s_, e_ = window(min(xi, n[a]-1), n[a], K[a], S[a], C[a])
                w += [s_ if valid else 0, e_ if valid else 0]; real.append(g[a] + xi*G[a])
            if not valid: w[0] = 0; w[1] = 0
            Win.append(w); Tok.append((real[0]*L[1] + real[1])*L[2] + real[2] if valid else -1)
        for tok in Tok:
            if tok >= 0: written.append(tok)
        for n0 in range(0, total, 32):
            for lane in range(32):
                j = n0 + lane
                if j >= total: continue
                c2 = j % nb[2]; c1 = (j // nb[2]) % nb[1]; c0 = j // (nb[2]*nb[1])
                y = [bs[0]+c0, bs[1]+c1, bs[2]+c2]
                assert all(0 <= y[a] < n[a] for a in range(3)), (y, n)
                ktok = ((g[0]+y[0]*G[0])*L[1] + (g[1]+y[1]*G[1]))*L[2] + g[2]+y[2]*G[2]
                for row in range(64):
                    w = Win[row]
                    if all(w[2*a] <= y[a] < w[2*a+1] for a in range(3)):
                        assert Tok[row] >= 0
                        seen.setdefault(Tok[row], []).append(ktok)
    assert sorted(written) == list(range(N)), "queries not written exactly once"
    # expected neighborhoods
    wins = [axis_windows(spatial[a], kernel[a], stride[a], dil[a], causal[a]) for a in range(r)]
    for qi, coord in enumerate(itertools.product(*[range(x) for x in spatial])):
        keys = [0]
        for a in range(r):
            gg, s_, e_ = wins[a][coord[a]]
            keys = [kk*spatial[a] + gg + yi*dil[a] for kk in keys for yi in range(s_, e_)]
        got = seen.get(qi, [])
        assert len(got) == len(set(got)), "duplicate key"
        assert sorted(got) == sorted(keys), (spatial, kernel, stride, dil, causal, coord, sorted(got)[:10], sorted(keys)[:10])
    return T, blocks

cases = [([37],[7],[1],[1],[False]), ([100],[9],[1],[3],[True]), ([300],[33],[4],[1],[False]), ([65],[65],[1],[1],[True]),
         ([64],[8],[8],[1],[False]), ([1000],[17],[2],[2],[False]), ([9,11],[5,3],[2,3],[1,2],[True,False]), ([16,16],[16,16],[1,1],[1,1],[False,False]),
         ([12,12],[4,4],[4,4],[1,1],[False,False]), ([20,13],[7,4],[3,2],[2,3],[False,True]), ([31,33],[13,13],[1,1],[1,1],[False,False]),
         ([5,6,7],[3,4,3],[1,2,1],[1,1,2],[False,True,False]), ([8,8,8],[3,3,3],[1,1,1],[2,1,1],[True,True,True]), ([4,6,6],[4,3,3],[1,1,1],[1,1,1],[True,False,False]),
         ([40],[5],[1],[2],[False]), ([6,7],[3,5],[1,1],[1,1],[False,True]), ([64,64],[13,13],[1,1],[1,1],[False,False])]
for c in cases:
    print(c, emulate(*c))
rng = random.Random(1)
for it in range(100):
    r = rng.randint(1, 3)
    spatial, kernel, stride, dil, causal = [], [], [], [], []
    for a in range(r):
        k = rng.randint(2, 7); d = rng.randint(1, 3); L = rng.randint(k*d, k*d + (12 if r > 1 else 60))
        spatial.append(L); kernel.append(k); stride.append(rng.randint(1, k)); dil.append(d); causal.append(rng.random() < 0.4)
    emulate(spatial, kernel, stride, dil, causal)
print("random ok")
