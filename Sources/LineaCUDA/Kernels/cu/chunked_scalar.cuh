// The chunked kernels of the scalar decays and the delta rules, one compile unit per stage so that a first use
// compiles only what it launches: chunked_fwd.cu, chunked_end.cu (the scalar decays: this header), chunked_delta_fwd.cu,
// chunked_delta_end.cu (chunked_delta.cuh), chunked_wy.cu, chunked_scan.cu.
#pragma once
// Linea: chunked forward of S_t = a_t S_{t-1} (I - b_t k_t k_t^T) + b_t k_t v_t^T, o_t = scale q_t^T S_t, with a scalar
// log gate per (b, t, h) (or a fixed one per head, or none), chunks of C = 64 tokens.
// q, k [B,T,H/group,K], v [B,T,H,V] bf16 (H value heads; value head h reads q/k head h / group, fla's GVA); g [B,T,H]
// fp32 (gate_mode 2) or per-head log decay [H] (gate_mode 1) or none (0); state h0/ht [B,H,K,V] fp32 (either may be
// null); o [B,T,H,V] bf16 or fp32.
//
// linea_chunk_fwd_*: one block per (V-block of BV columns, head, batch) walks the chunks in order and keeps its K x BV
// slice of the state in fp32 registers. With G the inclusive cumulative log gate inside the chunk (fp32) and S the
// state before the chunk, per chunk:
//   delta rules only: U = u - w S                             (u, w from the WY prepass; else U = v)
//   o_i = scale e^{G_i} q_i S + sum_{j<=i} scale e^{G_i-G_j} (q_i.k_j) U_j
//   S  <- e^{G_last} S + sum_j k_j (e^{G_last-G_j} U_j)^T
// Every bf16 MMA operand made from fp32 values (the state, the decayed scores, U, the decayed U or K) is split into hi + lo
// bf16 parts (x = hi + lo to ~16 bits; an extra MMA per part) so that the result stays within ~1e-4 of fp32 math;
// plain bf16 rounding of these operands alone gives ~2e-3 relative error against an fp64 reference.
// Scalar decays (lc_chunk_fwd, 8 warps): warp w computes output rows 16 (w % 4) .. for half of the BV columns (warps w
// and w ^ 4 share the scores of those rows, half each), and one 16-row tile of the state; the decayed update scales the
// columns of the K^T fragments (e^{G_last-G_j}). Delta rules (lc_chunk_fwd_delta, 4 warps, BV = 64): transposed, each
// warp keeps S^T for 16 columns and takes every product's left operand from its registers.
// Tiles arrive by cp.async one chunk ahead.
// Long sequences with few (batch, head) pairs: the chunks are cut into P segments run in parallel; a first launch
// stores each segment's end state from a zero state, a scan turns those into the state at each segment's start, and
// the third launch runs every segment from its start state (grid.z = B * P; the scalar decays' last segment may be
// longer than the others, and its blocks come first in the grid). Scalar decays: the first launch is
// linea_chunk_end_k*_v*_{plain,gated} (the walk compiled without q and outputs), which also stores the segment's total
// log2 gate for linea_chunk_seg_scan. Delta rules: a segment maps its start state S to M S + E (M = the product of its
// chunks' (e^{G_last} I - K^T diag(e^{G_last-G}) w), K x K; E its end state from zero); the first launch
// (linea_chunk_end_k*_{delta,gdelta}, lc_chunk_end_delta below) stores both, and linea_chunk_seg_scan_delta applies
// S_{p+1} = M_p S_p + E_p.
//
// linea_chunk_wy_*: the delta-rule prepass, one block per (chunk, head, batch): with L_ij = beta_i e^{G_i-G_j} k_i.k_j
// (j < i), A = (I + L)^{-1} blocked by 16 (diagonal blocks by forward substitution in fp32, the others by 16 x 16
// products), w = A (beta e^G k) stored bf16 [B,T,H,K] and u = A (beta v) stored fp32 [B,T,H,V] (beta e^G folded into
// A's columns, split hi + lo).

#include "chunked_common.cuh"

// The scalar decays' walk. STATE_ONLY: the end-state pass compiled on its own (no q tile, no output code, no smem copy
// of the state, so that two blocks fit on an SM). GATED: a decay (gate_mode 1 or 2); without it (linear_attn) no gate
// is loaded and no decay computed.
template <int K, int BV, bool STATE_ONLY, bool GATED>
__device__ __forceinline__ void lc_chunk_fwd(
    const lc_bf16* __restrict__ q, const lc_bf16* __restrict__ k, const lc_bf16* __restrict__ v,
    const float* __restrict__ g, int gate_mode,
    const float* __restrict__ h0, float* __restrict__ ht, void* __restrict__ o, int out_bf16,
    int T, int H, int group, int V, float scale, int seg_chunks, int segments, float* __restrict__ seg_state,
    float* __restrict__ seg_gate)
{
    // NW warps: warp w computes output rows 16 (w % 4) .. for BV / (NW / 4) of the columns (NH n-tiles), and owns the
    // state's 16-row m-tile `sm`, n-tiles [sn0, sn0 + SN) of this block's BV columns. (16 warps measured no faster.)
    constexpr int NW = 8, C = 64, LK = K + 8, LV = BV + 8, KS = K / 16, NV = BV / 8, NH = NV / (NW / 4);
    constexpr int MT = K / 16, SN = NV / (NW / MT);
    static_assert(NH >= 2 && SN >= 2 && NW % MT == 0, "tile split");
    // Skip the fully masked score tiles of the causal block (warp-uniform branches) when a warp has few output columns;
    // with more, the straight-line code is faster (H100: 0.485 against 0.534 ms at BV = 128, linear_attn, T = 2048).
    constexpr bool SKIP = NH <= 2;
    extern __shared__ uint4 lc_smem4[];
    lc_bf16* Qs = (lc_bf16*)lc_smem4;                      // [2][C][LK]
    lc_bf16* Ks = Qs + (STATE_ONLY ? 0 : 2 * C * LK);      // [2][C][LK]
    lc_bf16* Sh = Ks + 2 * C * LK;                         // [K][LV] state hi (full entries)
    lc_bf16* Sl = Sh + (STATE_ONLY ? 0 : K * LV);          // [K][LV] state lo
    float* Gall = (float*)(Sl + (STATE_ONLY ? 0 : K * LV)); // [NW][C] cumulative gates, one copy per warp
    lc_bf16* Us = (lc_bf16*)(Gall + NW * C);               // [2][C][LV] v
    // [4 row tiles][2 key halves][2 key tiles][hi, lo][32 lanes] A fragments of the scores (full entries)
    uint4* Pex = (uint4*)(Us + 2 * C * LV);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const int mat = lane >> 3, r8 = lane & 7;
    // P = `segments` segments: p < P - 1 of seg_chunks chunks, the last one the rest (it may be longer: its blocks
    // are dispatched first, blockIdx.z = (P - 1 - p) * B + b, while the other SMs take the shorter segments). In an
    // end-state entry (STATE_ONLY), a block runs segment p from a zero state and stores its end state (seg_state
    // [B*P,H,K,V]) and total log2 gate (seg_gate [B*P,H]); otherwise it starts from h0 (p = 0) or from the start state
    // the scan left in seg_state[p - 1], and writes outputs (and ht if last).
    const int NC = (T + 64 - 1) / 64, P = segments, Bn = gridDim.z / P;
    const int v0 = blockIdx.x * BV, h = blockIdx.y, p = P - 1 - (int)blockIdx.z / Bn, b = blockIdx.z % Bn;
    const int cBegin = p * seg_chunks, cEnd = p == P - 1 ? NC : cBegin + seg_chunks;
    if (STATE_ONLY && p == P - 1) return;  // the last segment's end state is not needed
    // v, o and the state hold H heads; q, k hold H / group under LINEA_GVA (value head h reads head hk = h / group).
    const int hk = LINEA_GVA ? h / group : h;
    const long kStride = (long)(LINEA_GVA ? H / group : H) * K, vStride = (long)H * V;
    const lc_bf16* qb = q + (long)b * T * kStride + (long)hk * K;
    const lc_bf16* kb = k + (long)b * T * kStride + (long)hk * K;
    const long vOff = (long)b * T * vStride + (long)h * V + v0;
    float* G = Gall + warp * C;
    const int rt = warp & 3, ch = warp >> 2, r0 = 16 * rt, c0 = ch * (BV / (NW / 4));  // output rows, column part
    const int sm = warp % MT, sn0 = (warp / MT) * SN;
    auto Gat = [&](int i) { return GATED ? G[i] : 0.f; };           // cumulative log2 gate (0 without a decay)
    auto decay = [&](float x) { return GATED ? lc_ex2(x) : 1.f; };  // 2^x
    // 32-bit shared addresses (bytes) of the tiles, and the lane-dependent parts of the fragment addresses.
    const unsigned sQ = lc_smem_addr(Qs), sK = lc_smem_addr(Ks), sSh = lc_smem_addr(Sh), sSl = lc_smem_addr(Sl),
                   sU = lc_smem_addr(Us);
    const unsigned aOff = ((r0 + (mat & 1) * 8 + r8) * LK + (mat >> 1) * 8) * 2;      // A rows r0.., of a [C][LK] tile
    const unsigned kOff = ((mat >> 1) * 8 * LK + r8 * LK + (mat & 1) * 8) * 2;         // B = K^T from a [C][LK] tile
    const unsigned ktOff = (((mat >> 1) * 8 + r8) * LK + sm * 16 + (mat & 1) * 8) * 2;  // A = K^T rows sm*16..
    const unsigned bOff = lc_b_off(LV, lane);

    // out = X S for the rows r0.. of an A tile X at shared address sX ([C][LK] bf16) and the columns c0.. of the state
    // (its hi and lo halves in Sh / Sl).
    auto timesState = [&](float (*out)[4], unsigned sX) {
#pragma unroll
        for (int nt = 0; nt < NH; ++nt) out[nt][0] = out[nt][1] = out[nt][2] = out[nt][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
            unsigned a[4];
            lc_ldsm(a, sX + aOff + ks * 32);
#pragma unroll
            for (int np = 0; np < NH / 2; ++np) {
                unsigned bh[4], bl[4];
                lc_ldsm_b(bh, sSh, LV, ks * 16, c0 + np * 16, bOff);
                lc_ldsm_b(bl, sSl, LV, ks * 16, c0 + np * 16, bOff);
                lc_mma2(out[2 * np], out[2 * np + 1], a, bh);
                lc_mma2(out[2 * np], out[2 * np + 1], a, bl);
            }
        }
    };
    auto load = [&](int c, int buf) {
        if (!STATE_ONLY) lc_load_tile<K, lc_bf16, NW * 32>(Qs + buf * C * LK, qb, c * C, T, kStride);  // the end-state pass needs no q
        lc_load_tile<K, lc_bf16, NW * 32>(Ks + buf * C * LK, kb, c * C, T, kStride);
        lc_load_tile<BV, lc_bf16, NW * 32>(Us + buf * C * LV, v + vOff, c * C, T, vStride);
        lc_cp_commit();
    };

    float S[SN][4];
    const long sBase = ((long)b * H + h) * K * V + v0;
#pragma unroll
    for (int nt = 0; nt < SN; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int row = sm * 16 + gq + 8 * (e >> 1), col = (sn0 + nt) * 8 + 2 * tq + (e & 1);
            // Segment p > 0 starts from the state linea_chunk_seg_scan left in seg_state[p - 1] (h0 folded in).
            const float* start = STATE_ONLY ? 0 : p > 0 ? seg_state + ((long)(b * P + p - 1) * H + h) * K * V + v0 : h0;
            const long off = p > 0 ? 0 : sBase;
            S[nt][e] = start ? start[off + (long)row * V + col] : 0.f;
        }
    float gsum = 0.f;  // total log2 gate of this segment
    auto storeState = [&]() {
#pragma unroll
        for (int nt = 0; nt < SN; ++nt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int row = sm * 16 + gq + 8 * r, col = (sn0 + nt) * 8 + 2 * tq;
                unsigned hi, lo;
                lc_split(S[nt][2 * r], S[nt][2 * r + 1], hi, lo);
                lc_sts(sSh + (row * LV + col) * 2, hi);
                lc_sts(sSl + (row * LV + col) * 2, lo);
            }
    };
    // The smem copy of the state feeds q S; the end-state pass does not read it.
    if (!STATE_ONLY) storeState();
    load(cBegin, cBegin & 1);
    float gn0 = GATED ? lc_gate(g, gate_mode, b, h, cBegin * C + 2 * lane, T, H) : 0.f;
    float gn1 = GATED ? lc_gate(g, gate_mode, b, h, cBegin * C + 2 * lane + 1, T, H) : 0.f;

    for (int c = cBegin; c < cEnd; ++c) {
        const int buf = c & 1;
        const float g0 = gn0, g1 = gn1;
        if (c + 1 < cEnd) {
            load(c + 1, buf ^ 1);
            if (GATED) {
                gn0 = lc_gate(g, gate_mode, b, h, (c + 1) * C + 2 * lane, T, H);
                gn1 = lc_gate(g, gate_mode, b, h, (c + 1) * C + 2 * lane + 1, T, H);
            }
            lc_cp_wait<1>();
        } else {
            lc_cp_wait<0>();
        }
        if (GATED) lc_cumsum(g0 * 1.4426950408889634f, g1 * 1.4426950408889634f, G, lane);  // log2 units
        __syncthreads();  // tiles of chunk c; the state before chunk c in Sh/Sl
        const float Glast = Gat(C - 1);
        gsum += Glast;

        const unsigned sQt = sQ + buf * C * LK * 2, sKt = sK + buf * C * LK * 2, sUn = sU + buf * C * LV * 2;

        // Outputs of rows r0..r0+15, columns c0..c0+BV/2. The scores of these rows against keys 0..r0+15 (the rest is
        // masked) are shared by the pair of warps with the same rows (warp ^ 4): each computes the scores against its
        // half of the keys (n-tiles 4 ch ..), decays, masks and splits them into hi + lo A fragments, and the pair trades
        // fragments through shared memory (Pex) behind a named barrier of the two warps.
        if (!STATE_ONLY) {
            float s[4][4];
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
            for (int ks = 0; ks < KS; ++ks) {
                unsigned a[4];
                lc_ldsm(a, sQt + aOff + ks * 32);
#pragma unroll
                for (int nt = 0; nt < 4; nt += 2) {
                    if (SKIP && 4 * ch + nt > 2 * rt) break;
                    unsigned kf[4];
                    lc_ldsm(kf, sKt + kOff + ((4 * ch + nt) * 8 * LK + ks * 16) * 2);
                    lc_mma2(s[nt], s[nt + 1], a, kf);
                }
            }
            float Gi[2];
            Gi[0] = Gat(r0 + gq);
            Gi[1] = Gat(r0 + gq + 8);
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int n8 = 4 * ch + nt, i = r0 + gq + 8 * (e >> 1), j = n8 * 8 + 2 * tq + (e & 1);
                    if (SKIP && n8 > 2 * rt + 1) continue;  // all masked, left at 0
                    s[nt][e] = (n8 < 2 * rt || j <= i) ? s[nt][e] * scale * decay(Gi[e >> 1] - Gat(j)) : 0.f;
                }
            unsigned ph[2][2][4], pl[2][2][4];  // [own, partner's][key tile within the half][fragment]
#pragma unroll
            for (int kk = 0; kk < 2; ++kk) {
                lc_split_a(s[2 * kk], s[2 * kk + 1], ph[0][kk], pl[0][kk]);
                uint4* slot = Pex + (((rt * 2 + ch) * 2 + kk) * 2) * 32 + lane;
                slot[0] = make_uint4(ph[0][kk][0], ph[0][kk][1], ph[0][kk][2], ph[0][kk][3]);
                slot[32] = make_uint4(pl[0][kk][0], pl[0][kk][1], pl[0][kk][2], pl[0][kk][3]);
            }
            // acc = f q S (f = scale e^{G_i}) while the partner finishes its scores, then += P U over both key halves.
            float acc[NH][4];
            timesState(acc, sQt);
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const float f = scale * decay(Gi[r]);
#pragma unroll
                for (int nt = 0; nt < NH; ++nt) acc[nt][2 * r] *= f, acc[nt][2 * r + 1] *= f;
            }
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                if (half == 1) {
                    asm volatile("bar.sync %0, 64;" :: "r"(1 + rt) : "memory");  // the pair's fragments are stored
#pragma unroll
                    for (int kk = 0; kk < 2; ++kk) {
                        const uint4* slot = Pex + (((rt * 2 + (ch ^ 1)) * 2 + kk) * 2) * 32 + lane;
                        const uint4 hi = slot[0], lo = slot[32];
                        ph[1][kk][0] = hi.x, ph[1][kk][1] = hi.y, ph[1][kk][2] = hi.z, ph[1][kk][3] = hi.w;
                        pl[1][kk][0] = lo.x, pl[1][kk][1] = lo.y, pl[1][kk][2] = lo.z, pl[1][kk][3] = lo.w;
                    }
                }
#pragma unroll
                for (int kk2 = 0; kk2 < 2; ++kk2) {
                    const int kk = 2 * (ch ^ half) + kk2;  // key tile of 16
                    if (SKIP && kk > rt) continue;
#pragma unroll
                    for (int np = 0; np < NH / 2; ++np) {
                        unsigned bv[4];
                        lc_ldsm_b(bv, sUn, LV, kk * 16, c0 + np * 16, bOff);
                        lc_mma2(acc[2 * np], acc[2 * np + 1], ph[half][kk2], bv);
                        lc_mma2(acc[2 * np], acc[2 * np + 1], pl[half][kk2], bv);
                    }
                }
            }
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int i = r0 + gq + 8 * r, t = c * C + i;
                if (t >= T) continue;
                const long base = ((long)b * T + t) * vStride + (long)h * V + v0 + c0;
#pragma unroll
                for (int nt = 0; nt < NH; ++nt) {
                    const int col = nt * 8 + 2 * tq;
                    if (out_bf16) *(unsigned*)((lc_bf16*)o + base + col) = lc_pack(acc[nt][2 * r], acc[nt][2 * r + 1]);
                    else *(float2*)((float*)o + base + col) = make_float2(acc[nt][2 * r], acc[nt][2 * r + 1]);
                }
            }
        }

        // State: S <- e^{G_last} S + K^T Vd (m-tile sm, n-tiles sn0..).
        {
            if (GATED) {
                const float d = lc_ex2(Glast);
#pragma unroll
                for (int nt = 0; nt < SN; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) S[nt][e] *= d;
            }
#pragma unroll
            for (int kk = 0; kk < 4; ++kk) {
                unsigned a[4], al[4];  // A = K^T: rows = key dims, columns = tokens
                lc_ldsm_t(a, sKt + ktOff + kk * 16 * LK * 2);
                if (GATED) {
                    // K^T diag(e^{G_last-G_j}) (columns j = kk*16 + 2 tq (+1, +8, +9) in this lane) split
                    // hi (in a) + lo, times the bf16 v tile: no decayed copy of v, no barrier for one.
#pragma unroll
                    for (int q4 = 0; q4 < 4; ++q4) {
                        const int j = kk * 16 + 2 * tq + 8 * (q4 >> 1);
                        const float x0 = __uint_as_float(a[q4] << 16) * lc_ex2(Glast - G[j]);
                        const float x1 = __uint_as_float(a[q4] & 0xffff0000u) * lc_ex2(Glast - G[j + 1]);
                        lc_split(x0, x1, a[q4], al[q4]);
                    }
                }
#pragma unroll
                for (int np = 0; np < SN / 2; ++np) {
                    unsigned bv[4];
                    lc_ldsm_b(bv, sUn, LV, kk * 16, (sn0 + 2 * np) * 8, bOff);
                    lc_mma2(S[2 * np], S[2 * np + 1], a, bv);
                    if (GATED) lc_mma2(S[2 * np], S[2 * np + 1], al, bv);
                }
            }
        }
        __syncthreads();  // every warp is done with Sh/Sl and the tiles of chunk c
        if (!STATE_ONLY) storeState();
    }
    float* out = !STATE_ONLY ? (p == P - 1 ? ht : 0) : seg_state + ((long)(b * P + p) * H + h) * K * V + v0;
    if (out) {
        const long base = STATE_ONLY ? 0 : sBase;
#pragma unroll
        for (int nt = 0; nt < SN; ++nt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int row = sm * 16 + gq + 8 * r, col = (sn0 + nt) * 8 + 2 * tq;
                *(float2*)(out + base + (long)row * V + col) = make_float2(S[nt][2 * r], S[nt][2 * r + 1]);
            }
    }
    if (STATE_ONLY && tid == 0 && blockIdx.x == 0) seg_gate[(long)(b * P + p) * H + h] = gsum;
}

// Entries linea_chunk_{fwd,end}_k{K}_v{BV}_{plain,gated} of the scalar decays: fwd the full walk, end the end-state
// pass of segmented runs; plain: linear_attn, gated: retention and simple_gla. One line each, so that the entry names
// stay greppable (CUDATests.kernelSourcesDeclareTheirEntries). The end-state entries are held to 128 registers so that
// two blocks share an SM.
#define LC_CHUNK_ENTRY(NAME, K, BV, STATE_ONLY, GATED)                                                                \
    extern "C" __global__ void __launch_bounds__(256, (STATE_ONLY) ? 2 : 1) NAME(                                    \
        const lc_bf16* q, const lc_bf16* k, const lc_bf16* v, const float* g, int gate_mode, const float* h0,        \
        float* ht, void* o, int out_bf16, int T, int H, int group, int V, float scale, int seg_chunks,               \
        int segments, float* seg_state, float* seg_gate) {                                                           \
        lc_chunk_fwd<K, BV, STATE_ONLY, GATED>(q, k, v, g, gate_mode, h0, ht, o, out_bf16, T, H, group, V, scale,    \
                                               seg_chunks, segments, seg_state, seg_gate);                           \
    }
