#!/usr/bin/env python3
"""Emulates attention_block_sparse_mma.cu's tile and mask iteration on the host (CUDABlockSparse's block sizes rounded
for whole-sequence blocks and its fit test, the reversed query tiles, the kept-key-block bitmask built by warp ballots,
the walk over its set bits with the next-tile rule, each warp's skip tests and the element mask of masked tiles) and
checks on random masks that every query row visits exactly its kept, causally visible keys, each once, that every
row is written by one block, and that every mask, bitmask and K/V index stays in range. No GPU needed: it checks
indices, not the softmax or the MMA fragments. Keep it in step with the kernel when either changes.
Usage: python3 lab/block_sparse_kernel_emulate.py [cases]
"""
import random
import sys

BN = 64  # LINEA_BSM_BN


def cdiv(a, b):
    return -(-a // b)


def host_sizes(T, S, blockRows, blockKeys, rowTiles):
    """CUDABlockSparse.forward: the block sizes passed to the kernel (a block at least as long as the sequence rounded)."""
    warpRows = 16 * rowTiles
    bm = cdiv(max(T, 1), warpRows) * warpRows if blockRows >= T else blockRows
    bn = cdiv(max(S, 1), 64) * 64 if blockKeys >= S else blockKeys
    return bm, bn


def next_block(bits, c, cbEnd, bn):
    """linea_bsm_next_block: the first key of the next kept key block at or after c, or -1."""
    while c < cbEnd:
        w = bits[c >> 5] >> (c & 31)
        if w:
            c += (w & -w).bit_length() - 1  # __ffs(w) - 1
            return c * bn if c < cbEnd else -1
        c = (c | 31) + 1
    return -1


def emulate(B, Hq, T, S, mask, mB, mH, QB, KB, blockRows, blockKeys, causal, NW, WM):
    """Runs every block of the grid; returns {(b, h, i): list of visited keys} and the row writes."""
    bm, bn = host_sizes(T, S, blockRows, blockKeys, WM)
    if not (bm % (16 * WM) == 0 and bn % 64 == 0 and KB <= 32768):
        return None  # the dispatch sends it to the portable kernel
    maskB = 0 if mB == 1 else Hq * QB * KB if mH != 1 else QB * KB
    maskH = 0 if mH == 1 else QB * KB
    BM = 16 * WM * NW
    words = max(1, cdiv(KB, 32))
    visited, writes = {}, {}
    grid = cdiv(T, BM)
    for bx in range(grid):
        m0 = (grid - 1 - bx) * BM
        for b in range(B):
            for h in range(Hq):
                mbase = b * maskB + h * maskH
                shift = S - T
                lastRow = min(m0 + BM, T) - 1
                nEnd = max(0, min(S, lastRow + shift + 1)) if causal else S
                cbEnd = (nEnd - 1) // bn + 1 if nEnd > 0 else 0
                rb0, rb1 = m0 // bm, lastRow // bm
                bits = [None] * words  # None: never written (reading one is a bug)
                for warp in range(NW):
                    w = warp
                    while w * 32 < cbEnd:
                        word = 0
                        for lane in range(32):
                            c = w * 32 + lane
                            keep = False
                            if c < cbEnd:
                                for rb in range(rb0, rb1 + 1):
                                    idx = rb * KB + c
                                    assert 0 <= idx < QB * KB, ("mask row read", rb, c)
                                    keep = keep or mask[mbase + idx] != 0
                            word |= int(keep) << lane
                        assert w < words, "bitmask word past the shared allocation"
                        bits[w] = word
                        w += NW
                n0 = next_block(bits, 0, cbEnd, bn)
                loaded = []
                while n0 >= 0:
                    assert 0 <= n0 < S, "tile start out of range"
                    cb = n0 // bn
                    nNext = n0 + BN if n0 + BN < min(nEnd, (cb + 1) * bn) else next_block(bits, cb + 1, cbEnd, bn)
                    loaded.append(n0)
                    needMaskBase = n0 + BN > S
                    for warp in range(NW):
                        rowW = warp * 16 * WM
                        warpPosLo = m0 + rowW + shift
                        warpPosHi = warpPosLo + 16 * WM - 1
                        warpRows = m0 + rowW < T
                        perWarp = rb1 > rb0
                        wrb = (m0 + rowW) // bm if warpRows else 0
                        if perWarp:
                            assert wrb * KB + cb < QB * KB
                        active = warpRows and not (causal and n0 > warpPosHi) and \
                            (not perWarp or mask[mbase + wrb * KB + cb] != 0)
                        if not active:
                            continue
                        needMask = needMaskBase or (causal and n0 + BN - 1 > warpPosLo)
                        for r in range(rowW, rowW + 16 * WM):
                            pos = m0 + r + shift
                            for j in range(n0, n0 + BN):
                                if needMask and (j >= S or (causal and j > pos)):
                                    continue
                                # Unmasked elements of an unmasked tile must be real, visible keys.
                                assert j < S and (not causal or j <= pos), ("unmasked invisible key", j, pos)
                                visited.setdefault((b, h, m0 + r), []).append(j)
                    n0 = nNext
                assert loaded == sorted(set(loaded)), "tiles not increasing or repeated"
                for r in range(BM):
                    i = m0 + r
                    if i < T:
                        writes[(b, h, i)] = writes.get((b, h, i), 0) + 1
    return visited, writes, bm, bn


def check(rng):
    B, Hq = rng.choice([1, 2]), rng.choice([1, 2, 3])
    T, S = rng.randint(1, 300), rng.randint(1, 300)
    if rng.random() < 0.3:
        S = T
    if rng.random() < 0.1:  # several bitmask words, walked by several warps
        T, S = rng.randint(1, 80), rng.randint(2000, 5000)
    blockRows = rng.choice([16, 32, 48, 64, 96, 128, 200, 17, 2**31 - 1])
    blockKeys = rng.choice([64, 128, 192, 32, 100, 2**31 - 1])
    causal = rng.random() < 0.5
    NW, WM = rng.choice([(4, 1), (8, 1), (4, 2), (8, 2), (2, 2), (2, 1)])
    QB, KB = cdiv(T, blockRows), cdiv(S, blockKeys)
    mB, mH = rng.choice([1, B]), rng.choice([1, Hq])
    density = rng.choice([0.0, 0.1, 0.3, 0.7, 1.0])
    mask = [1 if rng.random() < density else 0 for _ in range(mB * mH * QB * KB)]
    if rng.random() < 0.3 and QB > 1:  # a query block with no kept key block
        rb = rng.randrange(QB)
        for bb in range(mB):
            for hh in range(mH):
                for c in range(KB):
                    mask[((bb * mH + hh) * QB + rb) * KB + c] = 0
    res = emulate(B, Hq, T, S, mask, mB, mH, QB, KB, blockRows, blockKeys, causal, NW, WM)
    if res is None:
        return False
    visited, writes, bm, bn = res
    shift = S - T
    for b in range(B):
        for h in range(Hq):
            for i in range(T):
                assert writes.get((b, h, i)) == 1, ("row written", b, h, i, writes.get((b, h, i)))
                mb = (b if mB != 1 else 0) * mH + (h if mH != 1 else 0)
                # BlockMask.keeps with the caller's block sizes (not the rounded ones).
                want = [j for j in range(S) if mask[(mb * QB + i // blockRows) * KB + j // blockKeys] != 0
                        and (not causal or j <= i + shift)]
                got = visited.get((b, h, i), [])
                assert got == want, ("row", (b, h, i), "T S", T, S, "blocks", blockRows, blockKeys, bm, bn,
                                     "causal", causal, "NW WM", NW, WM, "got", got[:20], "want", want[:20])
    return True


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    rng = random.Random(20)
    ran = sum(check(rng) for _ in range(n))
    print(f"block_sparse_kernel_emulate: {ran} of {n} random cases take the tensor-core kernel; all rows see exactly their keys")


if __name__ == "__main__":
    main()
