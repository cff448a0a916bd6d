// Linea: chunked forward of S_t = a_t S_{t-1} (I - b_t k_t k_t^T) + b_t k_t v_t^T, o_t = scale q_t^T S_t, with a scalar
// log gate per (b, t, h) (or a fixed one per head, or none), chunks of C = 64 tokens.
// q, k [B,T,H,K], v [B,T,H,V] bf16; g [B,T,H] fp32 (gate_mode 2) or per-head log decay [H] (gate_mode 1) or none (0);
// state h0/ht [B,H,K,V] fp32 (either may be null); o [B,T,H,V] bf16 or fp32.
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
    int T, int H, int V, float scale, int seg_chunks, int segments, float* __restrict__ seg_state,
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
    const long kStride = (long)H * K, vStride = (long)H * V;
    const lc_bf16* qb = q + (long)b * T * kStride + (long)h * K;
    const lc_bf16* kb = k + (long)b * T * kStride + (long)h * K;
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
        float* ht, void* o, int out_bf16, int T, int H, int V, float scale, int seg_chunks, int segments,             \
        float* seg_state, float* seg_gate) {                                                                         \
        lc_chunk_fwd<K, BV, STATE_ONLY, GATED>(q, k, v, g, gate_mode, h0, ht, o, out_bf16, T, H, V, scale,           \
                                               seg_chunks, segments, seg_state, seg_gate);                           \
    }
LC_CHUNK_ENTRY(linea_chunk_fwd_k64_v32_plain, 64, 32, false, false)
LC_CHUNK_ENTRY(linea_chunk_fwd_k64_v32_gated, 64, 32, false, true)
LC_CHUNK_ENTRY(linea_chunk_fwd_k64_v64_plain, 64, 64, false, false)
LC_CHUNK_ENTRY(linea_chunk_fwd_k64_v64_gated, 64, 64, false, true)
LC_CHUNK_ENTRY(linea_chunk_fwd_k64_v128_plain, 64, 128, false, false)
LC_CHUNK_ENTRY(linea_chunk_fwd_k64_v128_gated, 64, 128, false, true)
LC_CHUNK_ENTRY(linea_chunk_fwd_k128_v32_plain, 128, 32, false, false)
LC_CHUNK_ENTRY(linea_chunk_fwd_k128_v32_gated, 128, 32, false, true)
LC_CHUNK_ENTRY(linea_chunk_fwd_k128_v64_plain, 128, 64, false, false)
LC_CHUNK_ENTRY(linea_chunk_fwd_k128_v64_gated, 128, 64, false, true)
LC_CHUNK_ENTRY(linea_chunk_fwd_k128_v128_plain, 128, 128, false, false)
LC_CHUNK_ENTRY(linea_chunk_fwd_k128_v128_gated, 128, 128, false, true)
LC_CHUNK_ENTRY(linea_chunk_end_k64_v32_plain, 64, 32, true, false)
LC_CHUNK_ENTRY(linea_chunk_end_k64_v32_gated, 64, 32, true, true)
LC_CHUNK_ENTRY(linea_chunk_end_k64_v64_plain, 64, 64, true, false)
LC_CHUNK_ENTRY(linea_chunk_end_k64_v64_gated, 64, 64, true, true)
LC_CHUNK_ENTRY(linea_chunk_end_k64_v128_plain, 64, 128, true, false)
LC_CHUNK_ENTRY(linea_chunk_end_k64_v128_gated, 64, 128, true, true)
LC_CHUNK_ENTRY(linea_chunk_end_k128_v32_plain, 128, 32, true, false)
LC_CHUNK_ENTRY(linea_chunk_end_k128_v32_gated, 128, 32, true, true)
LC_CHUNK_ENTRY(linea_chunk_end_k128_v64_plain, 128, 64, true, false)
LC_CHUNK_ENTRY(linea_chunk_end_k128_v64_gated, 128, 64, true, true)
LC_CHUNK_ENTRY(linea_chunk_end_k128_v128_plain, 128, 128, true, false)
LC_CHUNK_ENTRY(linea_chunk_end_k128_v128_gated, 128, 128, true, true)

// The transposed delta kernels (lc_chunk_fwd_delta, lc_chunk_end_delta) keep S^T for a warp's 16 columns as K / 8 fp32
// accumulator n-tiles St[n][e] = S[key 8 n + 2 tq + (e & 1)][column gq + 8 (e >> 1)]; two adjacent n-tiles make one
// A fragment. lc_st_update: S^T += U^T k, with U^T (16 columns x 64 tokens, 8 n-tiles) split hi + lo into A fragments
// and k, a [64][K + 8] bf16 tile at shared address sKt (kOff = lc_b_off(K + 8, lane)), as B. 128 MMAs at K = 128.
template <int K>
__device__ __forceinline__ void lc_st_update(float (*St)[4], float (*Ut)[4], unsigned sKt, unsigned kOff) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
        unsigned ah[4], al[4];
        lc_split_a(Ut[2 * kk], Ut[2 * kk + 1], ah, al);
#pragma unroll
        for (int np = 0; np < K / 16; ++np) {
            unsigned bk[4];
            lc_ldsm_b(bk, sKt, K + 8, kk * 16, np * 16, kOff);
            lc_mma2(St[2 * np], St[2 * np + 1], ah, bk);
            lc_mma2(St[2 * np], St[2 * np + 1], al, bk);
        }
    }
}
// Stores S^T into a [K, ld] fp32 matrix; `out` points at the lane's column gq of the warp's 16 (row 0).
template <int K>
__device__ __forceinline__ void lc_st_store(float* out, int ld, const float (*St)[4], int tq) {
#pragma unroll
    for (int n = 0; n < K / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) out[(long)(8 * n + 2 * tq + (e & 1)) * ld + 8 * (e >> 1)] = St[n][e];
}

// linea_chunk_fwd_k{K}_{delta,gdelta}: the delta rules' full walk, transposed (as lc_chunk_end_delta): one block of 4
// warps per (64 columns of V, head, b * P + p); warp w keeps S^T for its 16 columns (16 x K fp32 accumulators). Per
// chunk, with P_ij = scale e^{G_i - G_j} q_i.k_j (j <= i) computed once per block (warp w: rows 16 w ..), split hi + lo
// into shared memory:
//   U^T = u^T - S^T w^T,  Y = S^T q^T                (A: S^T split hi + lo, once for both)
//   o^T = Y diag(scale e^{G_i}) + U^T P^T             (A: U^T split hi + lo; B: P from shared memory)
//   S^T <- e^{G_last} S^T + (U^T diag(e^{G_last - G_j})) k
// k arrives double-buffered one chunk ahead; q, w and u single-buffered, loaded for the next chunk once this chunk's
// products with them are done (about 107 KB of shared memory at K = 128: two blocks per SM).
template <int K, bool GATED>
__device__ __forceinline__ void lc_chunk_fwd_delta(
    const lc_bf16* __restrict__ q, const lc_bf16* __restrict__ k, const float* __restrict__ u,
    const lc_bf16* __restrict__ w, const float* __restrict__ g, int gate_mode,
    const float* __restrict__ h0, float* __restrict__ ht, void* __restrict__ o, int out_bf16,
    int T, int H, int V, float scale, int seg_chunks, const float* __restrict__ seg_state)
{
    constexpr int C = 64, BV = 64, LK = K + 8, LU = BV + 4, LP = C + 8, KN = K / 8;
    extern __shared__ uint4 lc_smem4[];
    lc_bf16* Ks = (lc_bf16*)lc_smem4;       // [2][C][LK]
    lc_bf16* Qs = Ks + 2 * C * LK;          // [C][LK]
    lc_bf16* Ws = Qs + C * LK;              // [C][LK]
    lc_bf16* Ph = Ws + C * LK;              // [C][LP] scores hi
    lc_bf16* Pl = Ph + C * LP;              // [C][LP] scores lo
    float* Us = (float*)(Pl + C * LP);      // [C][LU]
    float* Gall = Us + C * LU;              // [4][C] cumulative log2 gates (gdelta), one copy per warp
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const int mat = lane >> 3, r8 = lane & 7;
    const int NC = (T + C - 1) / C, P = (NC + seg_chunks - 1) / seg_chunks;
    const int v0 = blockIdx.x * BV, h = blockIdx.y, b = blockIdx.z / P, p = blockIdx.z - b * P;
    const int cBegin = p * seg_chunks, cEnd = min(NC, cBegin + seg_chunks);
    const long kStride = (long)H * K, vStride = (long)H * V;
    const lc_bf16* qb = q + (long)b * T * kStride + (long)h * K;
    const lc_bf16* kb = k + (long)b * T * kStride + (long)h * K;
    const lc_bf16* wb = w + (long)b * T * kStride + (long)h * K;
    const float* ub = u + (long)b * T * vStride + (long)h * V + v0;
    float* G = Gall + warp * C;
    const int r0 = 16 * warp, col0 = 16 * warp;  // the warp's score rows, and its state columns of the block's 64
    const unsigned sK = lc_smem_addr(Ks), sQ = lc_smem_addr(Qs), sW = lc_smem_addr(Ws), sPh = lc_smem_addr(Ph),
                   sPl = lc_smem_addr(Pl);
    const unsigned aOff = ((r0 + (mat & 1) * 8 + r8) * LK + (mat >> 1) * 8) * 2;     // A = q rows r0.. ([C][LK])
    const unsigned nOff = ((mat >> 1) * 8 * LK + r8 * LK + (mat & 1) * 8) * 2;       // B = X^T of a [C][LK] tile X
    const unsigned pOff = ((mat >> 1) * 8 * LP + r8 * LP + (mat & 1) * 8) * 2;       // B = P^T of [C][LP] P
    const unsigned kOff = lc_b_off(LK, lane);                                          // B = k (tokens x keys)
    auto loadK = [&](int c, int buf) {
        lc_load_tile<K, lc_bf16, 128>(Ks + buf * C * LK, kb, c * C, T, kStride);
        lc_cp_commit();
    };
    auto loadQWU = [&](int c) {
        lc_load_tile<K, lc_bf16, 128>(Qs, qb, c * C, T, kStride);
        lc_load_tile<K, lc_bf16, 128>(Ws, wb, c * C, T, kStride);
        lc_load_tile<BV, float, 128>(Us, ub, c * C, T, vStride);
        lc_cp_commit();
    };
    // St[n][e] = S[key 8 n + 2 tq + (e & 1)][column v0 + col0 + gq + 8 (e >> 1)], from h0 (p = 0) or the start state
    // the scan left in seg_state[p - 1].
    float St[KN][4];
    {
        const float* start = p > 0 ? seg_state + ((long)(b * P + p - 1) * H + h) * K * V : h0 ? h0 + ((long)b * H + h) * K * V : 0;
#pragma unroll
        for (int n = 0; n < KN; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e)
                St[n][e] = start ? start[(long)(8 * n + 2 * tq + (e & 1)) * V + v0 + col0 + gq + 8 * (e >> 1)] : 0.f;
    }
    loadK(cBegin, cBegin & 1);
    loadQWU(cBegin);
    float gn0 = GATED ? lc_gate(g, gate_mode, b, h, cBegin * C + 2 * lane, T, H) : 0.f;
    float gn1 = GATED ? lc_gate(g, gate_mode, b, h, cBegin * C + 2 * lane + 1, T, H) : 0.f;

    for (int c = cBegin; c < cEnd; ++c) {
        const int buf = c & 1;
        lc_cp_wait<0>();
        __syncthreads();  // the tiles of chunk c are in; every warp is done with chunk c - 1 (k buffer, scores)
        if (c + 1 < cEnd) loadK(c + 1, buf ^ 1);
        if (GATED) {
            lc_cumsum(gn0 * 1.4426950408889634f, gn1 * 1.4426950408889634f, G, lane);  // log2 units
            if (c + 1 < cEnd) {
                gn0 = lc_gate(g, gate_mode, b, h, (c + 1) * C + 2 * lane, T, H);
                gn1 = lc_gate(g, gate_mode, b, h, (c + 1) * C + 2 * lane + 1, T, H);
            }
        }
        const unsigned sKt = sK + buf * C * LK * 2;
        // Scores of rows r0..r0+15 against keys 0..r0+15 (the rest is masked), decayed, split into Ph / Pl.
        {
            float s[8][4];
#pragma unroll
            for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
            for (int ks = 0; ks < K / 16; ++ks) {
                unsigned a[4];
                lc_ldsm(a, sQ + aOff + ks * 32);
#pragma unroll
                for (int np = 0; np < 4; ++np) {
                    if (np > warp) break;
                    unsigned kf[4];
                    lc_ldsm(kf, sKt + nOff + (np * 16 * LK + ks * 16) * 2);
                    lc_mma2(s[2 * np], s[2 * np + 1], a, kf);
                }
            }
            const float Gi0 = GATED ? G[r0 + gq] : 0.f, Gi1 = GATED ? G[r0 + gq + 8] : 0.f;
#pragma unroll
            for (int n = 0; n < 8; ++n) {
                if (n > 2 * warp + 1) break;
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    const int i = r0 + gq + 8 * r, j = 8 * n + 2 * tq;
                    const float Gi = r ? Gi1 : Gi0;
                    const float d0 = GATED ? lc_ex2(Gi - G[j]) : 1.f, d1 = GATED ? lc_ex2(Gi - G[j + 1]) : 1.f;
                    const float x0 = j <= i ? s[n][2 * r] * scale * d0 : 0.f;
                    const float x1 = j + 1 <= i ? s[n][2 * r + 1] * scale * d1 : 0.f;
                    unsigned hi, lo;
                    lc_split(x0, x1, hi, lo);
                    lc_sts(sPh + (i * LP + j) * 2, hi);
                    lc_sts(sPl + (i * LP + j) * 2, lo);
                }
            }
        }
        // X = S^T w^T and Y = S^T q^T (16 columns x 64 tokens each), S^T split once per 16 keys.
        float Ut[8][4], Ot[8][4];
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) Ut[n][e] = Ot[n][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < K / 16; ++ks) {
            unsigned ah[4], al[4];
            lc_split_a(St[2 * ks], St[2 * ks + 1], ah, al);
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                unsigned bf[4];
                lc_ldsm(bf, sW + nOff + (np * 16 * LK + ks * 16) * 2);
                lc_mma2(Ut[2 * np], Ut[2 * np + 1], ah, bf);
                lc_mma2(Ut[2 * np], Ut[2 * np + 1], al, bf);
                lc_ldsm(bf, sQ + nOff + (np * 16 * LK + ks * 16) * 2);
                lc_mma2(Ot[2 * np], Ot[2 * np + 1], ah, bf);
                lc_mma2(Ot[2 * np], Ot[2 * np + 1], al, bf);
            }
        }
        // U^T = u^T - X; o^T = Y scale e^{G_i} so far.
#pragma unroll
        for (int n = 0; n < 8; ++n) {
            const int j = 8 * n + 2 * tq;
            const float f0 = scale * (GATED ? lc_ex2(G[j]) : 1.f), f1 = scale * (GATED ? lc_ex2(G[j + 1]) : 1.f);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                Ut[n][e] = Us[(j + (e & 1)) * LU + col0 + gq + 8 * (e >> 1)] - Ut[n][e];
                Ot[n][e] *= (e & 1) ? f1 : f0;
            }
        }
        __syncthreads();  // every warp's scores are in Ph / Pl; q, w and u of chunk c are no longer read
        if (c + 1 < cEnd) loadQWU(c + 1);
        // o^T += U^T P^T: key tiles kk (16 tokens j) against the output tokens i >= j.
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
            unsigned uh[4], ul[4];
            lc_split_a(Ut[2 * kk], Ut[2 * kk + 1], uh, ul);
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                if (np < kk) continue;  // output tokens 16 np .. all before key tile kk: masked
                unsigned bh[4], bl[4];
                lc_ldsm(bh, sPh + pOff + (np * 16 * LP + kk * 16) * 2);
                lc_ldsm(bl, sPl + pOff + (np * 16 * LP + kk * 16) * 2);
                lc_mma2(Ot[2 * np], Ot[2 * np + 1], uh, bh);
                lc_mma2(Ot[2 * np], Ot[2 * np + 1], ul, bh);
                lc_mma2(Ot[2 * np], Ot[2 * np + 1], uh, bl);
            }
        }
        // Outputs: Ot[n][e] is o[t = c C + 8 n + 2 tq + (e & 1)][v0 + col0 + gq + 8 (e >> 1)]. Lanes gq and gq ^ 1 swap
        // one value of each pair, so that a lane holds two adjacent columns of one token: the even lane token
        // 2 tq, the odd one 2 tq + 1, columns gq & ~1 and the next (one 4-byte bf16 pair or one float2 store).
        {
            const int odd = gq & 1;
            const long chunkAt = ((long)b * T + c * C) * vStride + (long)h * V + v0 + col0 + (gq & ~1);
#pragma unroll
            for (int n = 0; n < 8; ++n) {
                const int tc = 8 * n + 2 * tq + odd;  // token within the chunk
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    const float lo = Ot[n][2 * hh], hi = Ot[n][2 * hh + 1];  // tokens 2 tq, 2 tq + 1 of column gq
                    const float other = __shfl_xor_sync(0xffffffffu, odd ? lo : hi, 4);
                    const float x0 = odd ? other : lo, x1 = odd ? hi : other;
                    if (c * C + tc >= T) continue;
                    const long at = chunkAt + (long)tc * vStride + 8 * hh;
                    if (out_bf16) *(unsigned*)((lc_bf16*)o + at) = lc_pack(x0, x1);
                    else *(float2*)((float*)o + at) = make_float2(x0, x1);
                }
            }
        }
        // State: S^T <- e^{G_last} S^T + (U^T diag(e^{G_last - G_j})) k.
        if (GATED) {
            const float Glast = G[C - 1], last = lc_ex2(Glast);
#pragma unroll
            for (int n = 0; n < KN; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) St[n][e] *= last;
#pragma unroll
            for (int n = 0; n < 8; ++n) {
                const int j = 8 * n + 2 * tq;
                const float d0 = lc_ex2(Glast - G[j]), d1 = lc_ex2(Glast - G[j + 1]);
#pragma unroll
                for (int e = 0; e < 4; ++e) Ut[n][e] *= (e & 1) ? d1 : d0;
            }
        }
        lc_st_update<K>(St, Ut, sKt, kOff);
    }
    if (p == P - 1 && ht) lc_st_store<K>(ht + ((long)b * H + h) * K * V + v0 + col0 + gq, V, St, tq);
}

// Arguments of the transposed delta kernels' entries, per kernel (LC_DELTA_ENTRY pastes the kernel's name).
#define lc_chunk_fwd_delta_ARGS                                                                                        \
    const lc_bf16 *q, const lc_bf16 *k, const float *u, const lc_bf16 *w, const float *g, int gate_mode,              \
        const float *h0, float *ht, void *o, int out_bf16, int T, int H, int V, float scale, int seg_chunks,          \
        const float *seg_state
#define lc_chunk_fwd_delta_CALL q, k, u, w, g, gate_mode, h0, ht, o, out_bf16, T, H, V, scale, seg_chunks, seg_state

// The delta rules' end-state pass of segmented runs: one block of 4 warps per (64 state columns, head, b * P + p)
// walks segment p from a zero state. Blocks x < V / 64 own columns 64 x .. of the state and store them as E
// (seg_state [B*P,H,K,V]); blocks x >= V / 64 walk columns 64 (x - V / 64) .. of the identity with u = 0 and store
// them as M (seg_trans [B*P,H,K,K]). The last segment's blocks return at once (its end state is not needed), and so do
// segment 0's transition blocks without an initial state h0 (M_0 multiplies h0 only).
// Transposed, so that both products of a chunk take their left operand from registers and no warp waits for another
// within a chunk: warp w keeps S^T for its 16 columns (16 x K fp32 accumulators) and, per chunk,
//   U^T = u^T - S^T w^T                                      (A: S^T split hi + lo; B: the w tile)
//   S^T <- e^{G_last} S^T + (U^T diag(e^{G_last - G_j})) k   (A: the decayed U^T split hi + lo; B: the k tile)
// The tiles (k, w and, in E blocks, u) arrive by cp.async one chunk ahead; one block barrier per chunk. About 103 KB of
// shared memory at K = 128 and at most 255 registers, so two blocks share an SM.
template <int K, bool GATED>
__device__ __forceinline__ void lc_chunk_end_delta(
    const lc_bf16* __restrict__ k, const float* __restrict__ u, const lc_bf16* __restrict__ w,
    const float* __restrict__ g, int gate_mode, const float* __restrict__ h0, int T, int H, int V, int seg_chunks,
    float* __restrict__ seg_state, float* __restrict__ seg_trans)
{
    constexpr int C = 64, BV = 64, LK = K + 8, LU = BV + 4, KN = K / 8;
    extern __shared__ uint4 lc_smem4[];
    lc_bf16* Ks = (lc_bf16*)lc_smem4;       // [2][C][LK]
    lc_bf16* Ws = Ks + 2 * C * LK;          // [2][C][LK]
    float* Us = (float*)(Ws + 2 * C * LK);  // [2][C][LU] (E blocks)
    float* Dall = Us + 2 * C * LU;          // [4][C] e^{G_last - G_j} (gdelta), one copy per warp
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const int mat = lane >> 3, r8 = lane & 7;
    const int NC = (T + C - 1) / C, P = (NC + seg_chunks - 1) / seg_chunks;
    const bool trans = (int)blockIdx.x >= V / BV;  // a transition block
    const int v0 = (trans ? blockIdx.x - V / BV : blockIdx.x) * BV, h = blockIdx.y, b = blockIdx.z / P,
              p = blockIdx.z - b * P;
    if (p == P - 1 || (trans && p == 0 && !h0)) return;
    const int cBegin = p * seg_chunks, cEnd = min(NC, cBegin + seg_chunks);
    const long kStride = (long)H * K, vStride = (long)H * V;
    const lc_bf16* kb = k + (long)b * T * kStride + (long)h * K;
    const lc_bf16* wb = w + (long)b * T * kStride + (long)h * K;
    const float* ub = u + (long)b * T * vStride + (long)h * V + v0;
    float* D = Dall + warp * C;
    const int col0 = 16 * warp;  // the warp's columns col0 .. col0 + 15 of the block's 64
    const unsigned sK = lc_smem_addr(Ks), sW = lc_smem_addr(Ws);
    const unsigned wOff = ((mat >> 1) * 8 * LK + r8 * LK + (mat & 1) * 8) * 2;  // B = w^T (keys x tokens), [C][LK] tile
    const unsigned kOff = lc_b_off(LK, lane);                                     // B = k (tokens x keys), [C][LK] tile
    auto load = [&](int c, int buf) {
        lc_load_tile<K, lc_bf16, 128>(Ks + buf * C * LK, kb, c * C, T, kStride);
        lc_load_tile<K, lc_bf16, 128>(Ws + buf * C * LK, wb, c * C, T, kStride);
        if (!trans) lc_load_tile<BV, float, 128>(Us + buf * C * LU, ub, c * C, T, vStride);
        lc_cp_commit();
    };
    // St[n][e] = S[key 8 n + 2 tq + (e & 1)][column col0 + gq + 8 (e >> 1)]: zero, or the identity's columns.
    float St[KN][4];
#pragma unroll
    for (int n = 0; n < KN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e)
            St[n][e] = trans && 8 * n + 2 * tq + (e & 1) == v0 + col0 + gq + 8 * (e >> 1) ? 1.f : 0.f;
    load(cBegin, cBegin & 1);
    float gn0 = GATED ? lc_gate(g, gate_mode, b, h, cBegin * C + 2 * lane, T, H) : 0.f;
    float gn1 = GATED ? lc_gate(g, gate_mode, b, h, cBegin * C + 2 * lane + 1, T, H) : 0.f;

    for (int c = cBegin; c < cEnd; ++c) {
        const int buf = c & 1;
        lc_cp_wait<0>();
        __syncthreads();  // the tiles of chunk c are in; every warp is done with those of chunk c - 1
        if (c + 1 < cEnd) load(c + 1, buf ^ 1);
        float last = 1.f;  // e^{G_last}
        if (GATED) {
            // Inclusive cumulative log2 gates of this lane's tokens 2 lane, 2 lane + 1, and the decays to the chunk end.
            const float g0 = gn0 * 1.4426950408889634f, g1 = gn1 * 1.4426950408889634f;
            if (c + 1 < cEnd) {
                gn0 = lc_gate(g, gate_mode, b, h, (c + 1) * C + 2 * lane, T, H);
                gn1 = lc_gate(g, gate_mode, b, h, (c + 1) * C + 2 * lane + 1, T, H);
            }
            float s = g0 + g1;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const float n = __shfl_up_sync(0xffffffffu, s, o);
                if (lane >= o) s += n;
            }
            const float Glast = __shfl_sync(0xffffffffu, s, 31);
            *(float2*)(D + 2 * lane) = make_float2(lc_ex2(Glast - (s - g1)), lc_ex2(Glast - s));
            __syncwarp();
            last = lc_ex2(Glast);
        }
        const unsigned sWt = sW + buf * C * LK * 2, sKt = sK + buf * C * LK * 2;
        // X = S^T w^T: 16 columns x 64 tokens (8 n-tiles of tokens).
        float Ut[8][4];
#pragma unroll
        for (int n = 0; n < 8; ++n) Ut[n][0] = Ut[n][1] = Ut[n][2] = Ut[n][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < K / 16; ++ks) {
            unsigned ah[4], al[4];
            lc_split_a(St[2 * ks], St[2 * ks + 1], ah, al);
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                unsigned bw[4];
                lc_ldsm(bw, sWt + wOff + (np * 16 * LK + ks * 16) * 2);
                lc_mma2(Ut[2 * np], Ut[2 * np + 1], ah, bw);
                lc_mma2(Ut[2 * np], Ut[2 * np + 1], al, bw);
            }
        }
        // U^T = u^T - X (transition blocks: u = 0), times e^{G_last - G_j} per token j with a decay.
        const float* Ub = Us + buf * C * LU;
#pragma unroll
        for (int n = 0; n < 8; ++n) {
            const int j = 8 * n + 2 * tq;
            const float2 d = GATED ? *(const float2*)(D + j) : make_float2(1.f, 1.f);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int col = col0 + gq + 8 * (e >> 1);
                const float x = (trans ? 0.f : Ub[(j + (e & 1)) * LU + col]) - Ut[n][e];
                Ut[n][e] = GATED ? x * ((e & 1) ? d.y : d.x) : x;
            }
        }
        if (GATED) {
#pragma unroll
            for (int n = 0; n < KN; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) St[n][e] *= last;
        }
        lc_st_update<K>(St, Ut, sKt, kOff);  // S^T += U^T k
    }
    const int ld = trans ? K : V;  // row stride of what is stored: M [K,K] or E [K,V]
    lc_st_store<K>((trans ? seg_trans : seg_state) + ((long)(b * P + p) * H + h) * K * ld + v0 + col0 + gq, ld, St, tq);
}

#define lc_chunk_end_delta_ARGS                                                                                        \
    const lc_bf16 *k, const float *u, const lc_bf16 *w, const float *g, int gate_mode, const float *h0, int T, int H, \
        int V, int seg_chunks, float *seg_state, float *seg_trans
#define lc_chunk_end_delta_CALL k, u, w, g, gate_mode, h0, T, H, V, seg_chunks, seg_state, seg_trans

// Entries linea_chunk_{fwd,end}_k{K}_{delta,gdelta} of the delta rules (4 warps, two blocks per SM), one line each as
// LC_CHUNK_ENTRY's.
#define LC_DELTA_ENTRY(NAME, KERNEL, K, GATED)                                                                        \
    extern "C" __global__ void __launch_bounds__(128, 2) NAME(KERNEL##_ARGS) { KERNEL<K, GATED>(KERNEL##_CALL); }
LC_DELTA_ENTRY(linea_chunk_fwd_k64_delta, lc_chunk_fwd_delta, 64, false)
LC_DELTA_ENTRY(linea_chunk_fwd_k64_gdelta, lc_chunk_fwd_delta, 64, true)
LC_DELTA_ENTRY(linea_chunk_fwd_k128_delta, lc_chunk_fwd_delta, 128, false)
LC_DELTA_ENTRY(linea_chunk_fwd_k128_gdelta, lc_chunk_fwd_delta, 128, true)
LC_DELTA_ENTRY(linea_chunk_end_k64_delta, lc_chunk_end_delta, 64, false)
LC_DELTA_ENTRY(linea_chunk_end_k64_gdelta, lc_chunk_end_delta, 64, true)
LC_DELTA_ENTRY(linea_chunk_end_k128_delta, lc_chunk_end_delta, 128, false)
LC_DELTA_ENTRY(linea_chunk_end_k128_gdelta, lc_chunk_end_delta, 128, true)

// Segment scan (scalar decays): seg_state [B*P,H,K*V] holds the end state of segments 0..P-2 from a zero state and
// seg_gate [B*P,H] their total log2 gates; replaces seg_state[p] by the state after segment p from h0 (or zero):
// S_{p+1} = 2^{gate_p} S_p + end_p. One thread per (b, h, state element), P - 1 steps.
extern "C" __global__ void __launch_bounds__(256) linea_chunk_seg_scan(
    float* seg_state, const float* seg_gate, const float* h0, int P, int H, int KV) {
    const int e = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y, b = blockIdx.z;
    if (e >= KV) return;
    float S = h0 ? h0[((long)b * H + h) * KV + e] : 0.f;
    for (int p = 0; p + 1 < P; ++p) {
        const long seg = (long)(b * P + p) * H + h;
        S = fmaf(lc_ex2(seg_gate[seg]), S, seg_state[seg * KV + e]);
        seg_state[seg * KV + e] = S;
    }
}

// Segment scan (delta rules): seg_state [B*P,H,K,V] holds E_p, the end state of segments 0..P-2 from a zero state, and
// seg_trans [B*P,H,K,K] their transitions M_p (M_0 only with h0); replaces seg_state[p] by S_{p+1} = M_p S_p + E_p
// (S_0 = h0 or zero), in fp32. One block per (32 columns of V, h, b); M_p goes through shared memory 32 columns at a time. K <= 128.
extern "C" __global__ void __launch_bounds__(256) linea_chunk_seg_scan_delta(
    float* seg_state, const float* seg_trans, const float* h0, int P, int H, int K, int V) {
    __shared__ float Ss[128][33], Ms[128][33];
    const int tid = threadIdx.x, tx = tid & 7, ty = tid >> 3, v0 = blockIdx.x * 32, h = blockIdx.y, b = blockIdx.z;
    const int R = K / 32;  // rows per thread: ty + 32 i
    for (int e = tid; e < K * 32; e += 256) {
        const int r = e >> 5, c = e & 31;
        Ss[r][c] = h0 ? h0[(((long)b * H + h) * K + r) * V + v0 + c] : 0.f;
    }
    for (int p = 0; p + 1 < P; ++p) {
        const long seg = (long)(b * P + p) * H + h;
        float* E = seg_state + seg * K * V + v0;
        const float* M = seg_trans + seg * K * K;
        float acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = i < R ? E[(long)(ty + 32 * i) * V + tx * 4 + j] : 0.f;
        for (int m0 = 0; (p > 0 || h0) && m0 < K; m0 += 32) {  // S_0 = 0 without h0: S_1 = E_0
            __syncthreads();  // Ss complete; the previous Ms tile read
            for (int e = tid; e < K * 32; e += 256) Ms[e >> 5][e & 31] = M[(long)(e >> 5) * K + m0 + (e & 31)];
            __syncthreads();
            for (int mm = 0; mm < 32; ++mm) {
                float s[4];
#pragma unroll
                for (int j = 0; j < 4; ++j) s[j] = Ss[m0 + mm][tx * 4 + j];
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    if (i >= R) break;
                    const float m = Ms[ty + 32 * i][mm];
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(m, s[j], acc[i][j]);
                }
            }
        }
        __syncthreads();  // every thread is done reading Ss
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            if (i >= R) break;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                Ss[ty + 32 * i][tx * 4 + j] = acc[i][j];
                E[(long)(ty + 32 * i) * V + tx * 4 + j] = acc[i][j];
            }
        }
    }
}

// hi + lo bf16 fragments of a 16 x 16 fp32 block in shared memory (row stride ld): as the A operand (rows x k), and
// as the B operand [k][n] of two n-tiles (b[0..1] n 0..7, b[2..3] n 8..15, as lc_mma2 takes them).
__device__ __forceinline__ void lc_frag_a32(const float* p, int ld, int lane, unsigned* hi, unsigned* lo) {
    const int gq = lane >> 2, tq = lane & 3;
#pragma unroll
    for (int q4 = 0; q4 < 4; ++q4) {
        const float2 x = *(const float2*)(p + (gq + 8 * (q4 & 1)) * ld + 2 * tq + 8 * (q4 >> 1));
        lc_split(x.x, x.y, hi[q4], lo[q4]);
    }
}
__device__ __forceinline__ void lc_frag_b32(const float* p, int ld, int lane, unsigned* hi, unsigned* lo) {
    const int gq = lane >> 2, tq = lane & 3;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float* at = p + (2 * tq + 8 * (i & 1)) * ld + 8 * (i >> 1) + gq;
        lc_split(at[0], at[ld], hi[i], lo[i]);
    }
}
// c0, c1 += a b for hi + lo operands, in three passes (lo x lo dropped).
__device__ __forceinline__ void lc_mma2_x3(float* c0, float* c1, const unsigned* ah, const unsigned* al,
                                           const unsigned* bh, const unsigned* bl) {
    lc_mma2(c0, c1, ah, bh);
    lc_mma2(c0, c1, ah, bl);
    lc_mma2(c0, c1, al, bh);
}

// Delta-rule prepass for one chunk: w = A (beta e^G k) [C,K], u = A (beta v) [C,V], A = (I + L)^{-1}.
template <int K, int VD>
__device__ __forceinline__ void lc_chunk_wy(
    const lc_bf16* __restrict__ k, const lc_bf16* __restrict__ v, const float* __restrict__ beta,
    const float* __restrict__ g, int gate_mode, lc_bf16* __restrict__ w, float* __restrict__ u, int T, int H)
{
    constexpr int C = 64, LK = K + 8, LVV = VD + 8, LA = C + 4;
    extern __shared__ uint4 lc_smem4[];
    lc_bf16* Ks = (lc_bf16*)lc_smem4;      // [C][LK]
    lc_bf16* Vs = Ks + C * LK;             // [C][LVV]
    float* L = (float*)(Vs + C * LVV);     // [C][LA]
    float* A = L;                          // [C][LA], written over L block by block (4 blocks/SM)
    float* G = L + C * LA;                 // [C]
    float* Bt = G + C;                     // [C] beta
    float* Fw = Bt + C;                    // [C] beta e^G (the column factors of w)
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const int mat = lane >> 3, r8 = lane & 7;
    const int c = blockIdx.x, h = blockIdx.y, b = blockIdx.z, t0 = c * C;
    const long kStride = (long)H * K, vStride = (long)H * VD;
    lc_load_tile<K, lc_bf16, 128>(Ks, k + (long)b * T * kStride + (long)h * K, t0, T, kStride);
    lc_load_tile<VD, lc_bf16, 128>(Vs, v + (long)b * T * vStride + (long)h * VD, t0, T, vStride);
    lc_cp_commit();
    if (warp == 0) {
        lc_cumsum(lc_gate(g, gate_mode, b, h, t0 + 2 * lane, T, H), lc_gate(g, gate_mode, b, h, t0 + 2 * lane + 1, T, H), G, lane);
    } else if (warp == 1) {
        for (int i = lane; i < C; i += 32) Bt[i] = t0 + i < T ? beta[((long)b * T + t0 + i) * H + h] : 0.f;
    }
    lc_cp_wait<0>();
    __syncthreads();
    if (tid < C) Fw[tid] = Bt[tid] * __expf(G[tid]);  // read after the next barrier
    // L = strictly lower part of beta_i e^{G_i - G_j} k_i.k_j, rows 16*warp ..
    {
        const int r0 = 16 * warp;
        const unsigned sKs = lc_smem_addr(Ks);
        const unsigned aAt = sKs + ((r0 + (mat & 1) * 8 + r8) * LK + (mat >> 1) * 8) * 2;
        const unsigned bAt = sKs + (((mat >> 1) * 8 + r8) * LK + (mat & 1) * 8) * 2;
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < K / 16; ++ks) {
            unsigned a[4];
            lc_ldsm(a, aAt + ks * 32);
#pragma unroll
            for (int nt = 0; nt < 8; nt += 2) {
                unsigned kf[4];
                lc_ldsm(kf, bAt + (nt * 8 * LK + ks * 16) * 2);
                lc_mma2(s[nt], s[nt + 1], a, kf);
            }
        }
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int i = r0 + gq + 8 * (e >> 1), j = nt * 8 + 2 * tq + (e & 1);
                L[i * LA + j] = j < i ? Bt[i] * __expf(G[i] - G[j]) * s[nt][e] : 0.f;
            }
    }
    __syncwarp();  // until the first block barrier, warp r touches only its own rows r0 .. r0 + 15 of L and A
    // A = (I + L)^{-1}, blocked by 16 (A_rj, r >= j: 16 x 16 blocks; warp r makes block row r, written over L's).
    // Diagonal: A_rr = (I + L_rr)^{-1} by forward substitution in fp32, lane l solving column l & 15.
    {
        const int r0 = 16 * warp, j = lane & 15;
        float* D = L + r0 * LA + r0;
        float a[16];
#pragma unroll
        for (int i = 0; i < 16; ++i) {
            float s0 = 0.f, s1 = 0.f;
#pragma unroll
            for (int m = 0; m + 1 < i; m += 2) {
                const float2 l = *(const float2*)(D + i * LA + m);
                s0 = fmaf(l.x, a[m], s0);
                s1 = fmaf(l.y, a[m + 1], s1);
            }
            if (i & 1) s0 = fmaf(D[i * LA + i - 1], a[i - 1], s0);
            a[i] = i < j ? 0.f : i == j ? 1.f : -(s0 + s1);
        }
        __syncwarp();  // the warp is done reading L_rr
        if (lane < 16) {
#pragma unroll
            for (int i = 0; i < 16; ++i) D[i * LA + j] = a[i];
        }
        __syncwarp();
    }
    // Off the diagonal: (I + L) A = I gives A_rj = -sum_{m=j}^{r-1} Z_rm A_mj with Z_rm = A_rr L_rm, by 16 x 16
    // products on hi + lo bf16 operands (three passes, ~16 significant bits, as A's in the products below). Z first
    // (warp r reads only its own rows), then one block barrier per distance d = r - j, so that A_mj (m - j < d) is in.
    {
        const int r0 = 16 * warp;
        unsigned zh[3][4], zl[3][4];
        unsigned dh[4], dl[4];
        lc_frag_a32(L + r0 * LA + r0, LA, lane, dh, dl);
#pragma unroll
        for (int m = 0; m < 3; ++m) {
            if (m >= warp) break;
            float z[2][4] = {};
            unsigned bh[4], bl[4];
            lc_frag_b32(L + r0 * LA + 16 * m, LA, lane, bh, bl);
            lc_mma2_x3(z[0], z[1], dh, dl, bh, bl);
            lc_split_a(z[0], z[1], zh[m], zl[m]);
        }
        __syncthreads();  // every diagonal block of A is in
#pragma unroll
        for (int d = 1; d < 4; ++d) {
            if (warp >= d) {
                const int j = warp - d;
                float acc[2][4] = {};
#pragma unroll
                for (int m = 0; m < 3; ++m) {
                    if (m < j || m >= warp) continue;
                    unsigned bh[4], bl[4];
                    lc_frag_b32(L + 16 * m * LA + 16 * j, LA, lane, bh, bl);
                    lc_mma2_x3(acc[0], acc[1], zh[m], zl[m], bh, bl);
                }
#pragma unroll
                for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                    for (int r = 0; r < 2; ++r)
                        *(float2*)(L + (r0 + gq + 8 * r) * LA + 16 * j + 8 * nt + 2 * tq) =
                            make_float2(-acc[nt][2 * r], -acc[nt][2 * r + 1]);
            }
            __syncthreads();
        }
    }
    // Rows 16*warp .. of A diag(f) (f = beta e^G for w, beta for u; hi + lo bf16 A fragments) times the k or v tile.
    const int r0 = 16 * warp;
    auto product = [&](const lc_bf16* X, int ldx, auto nTag, auto fp32Tag, void* out, long stride, bool gated) {
        constexpr int N = decltype(nTag)::value;
        const unsigned xAt = lc_smem_addr(X) + lc_b_off(ldx, lane);
        float acc[N / 8][4];
#pragma unroll
        for (int nt = 0; nt < N / 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
            if (kk > warp) break;  // A is lower triangular
            unsigned ah[4], al[4];
#pragma unroll
            for (int q4 = 0; q4 < 4; ++q4) {
                const int i = r0 + gq + 8 * (q4 & 1), j = kk * 16 + 2 * tq + 8 * (q4 >> 1);
                const float* f = gated ? Fw : Bt;
                const float f0 = f[j], f1 = f[j + 1];
                lc_split(A[i * LA + j] * f0, A[i * LA + j + 1] * f1, ah[q4], al[q4]);
            }
#pragma unroll
            for (int np = 0; np < N / 16; ++np) {
                unsigned bx[4];
                lc_ldsm_t(bx, xAt + (kk * 16 * ldx + np * 16) * 2);
                lc_mma2(acc[2 * np], acc[2 * np + 1], ah, bx);
                lc_mma2(acc[2 * np], acc[2 * np + 1], al, bx);
            }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int t = t0 + r0 + gq + 8 * r;
            if (t >= T) continue;
#pragma unroll
            for (int nt = 0; nt < N / 8; ++nt) {
                const long at = ((long)b * T + t) * stride + (long)h * N + nt * 8 + 2 * tq;
                if (decltype(fp32Tag)::value) *(float2*)((float*)out + at) = make_float2(acc[nt][2 * r], acc[nt][2 * r + 1]);
                else *(unsigned*)((lc_bf16*)out + at) = lc_pack(acc[nt][2 * r], acc[nt][2 * r + 1]);
            }
        }
    };
    product(Ks, LK, lc_int<K>(), lc_int<0>(), w, kStride, true);
    product(Vs, LVV, lc_int<VD>(), lc_int<1>(), u, vStride, false);
}

extern "C" __global__ void __launch_bounds__(128) linea_chunk_wy_k64_v64(
    const lc_bf16* k, const lc_bf16* v, const float* beta, const float* g, int gate_mode, lc_bf16* w, float* u,
    int T, int H) {
    lc_chunk_wy<64, 64>(k, v, beta, g, gate_mode, w, u, T, H);
}
extern "C" __global__ void __launch_bounds__(128) linea_chunk_wy_k64_v128(
    const lc_bf16* k, const lc_bf16* v, const float* beta, const float* g, int gate_mode, lc_bf16* w, float* u,
    int T, int H) {
    lc_chunk_wy<64, 128>(k, v, beta, g, gate_mode, w, u, T, H);
}
extern "C" __global__ void __launch_bounds__(128) linea_chunk_wy_k128_v64(
    const lc_bf16* k, const lc_bf16* v, const float* beta, const float* g, int gate_mode, lc_bf16* w, float* u,
    int T, int H) {
    lc_chunk_wy<128, 64>(k, v, beta, g, gate_mode, w, u, T, H);
}
extern "C" __global__ void __launch_bounds__(128) linea_chunk_wy_k128_v128(
    const lc_bf16* k, const lc_bf16* v, const float* beta, const float* g, int gate_mode, lc_bf16* w, float* u,
    int T, int H) {
    lc_chunk_wy<128, 128>(k, v, beta, g, gate_mode, w, u, T, H);
}
