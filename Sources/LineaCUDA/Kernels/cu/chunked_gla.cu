// Linea: chunked gla forward, S_t = diag(e^{g_t}) S_{t-1} + k_t v_t^T, o_t = scale q_t^T S_t, chunks of C = 64 tokens.
// q, k [B,T,H/group,K], v [B,T,H,V] bf16 (H value heads; value head h reads q/k head h / group, fla's GVA);
// g [B,T,H,K] fp32 log gates; h0/ht [B,H,K,V] fp32 (either may be null); o [B,T,H,V] bf16 or fp32.
//
// One block of 8 warps per (V block of BV columns, head, batch[, sequence segment]) walks its chunks in order with its
// K x BV slice of the state in fp32 registers. With G the inclusive cumulative log2 gate of the chunk (per channel,
// fp32, computed in registers from the raw gates, which are prefetched one chunk ahead) and S the state before it:
//   o_i = scale [ (q_i * 2^{G_i}) S + sum_{j<=i} (q_i * 2^{G_i - R}) . (k_j * 2^{R - G_j}) v_j ]
//   S  <- diag(2^{G_last}) S + sum_j (k_j * 2^{G_last - G_j}) v_j^T
// Warp w computes output rows 16 I .. (its 16-row block I: w, or 7 - w for w >= 4) for half of the BV columns.
// The intra-chunk scores of block I use one reference row R per block: the block's middle row (rows 16 I + 8), so
// every factor stays within 2^{+-80} when the gates of the block span at most 80 (log2) in every channel; beyond that ("steep" gates) R is the
// block's first row (factors <= 1 left of the block) and the 16 x 16 diagonal block is summed directly, channel by
// channel, with 2^{G_i - G_j} <= 1.
// Every bf16 MMA operand made from fp32 values (decayed q and k, scores, state) is split into hi + lo bf16 parts (an
// extra MMA per part) so that results stay near fp32 accuracy; v is used as it is (bf16 input).
// Long sequences with few (batch, head) pairs: the chunks are cut into P segments run in parallel; a first launch
// (state_only) stores each segment's end state from a zero state and its total log2 gate per channel, and the second
// carries the initial state through those before its own segment (grid.z = B * P).

// linea-nvrtc-variant: gva -DLINEA_GVA=1  (grouped value heads, HV > H: chunked_common.cuh)
#include "chunked_common.cuh"

template <int K, int BV>
__device__ __forceinline__ void lg_gla_fwd(
    const lc_bf16* __restrict__ q, const lc_bf16* __restrict__ k, const lc_bf16* __restrict__ v,
    const float* __restrict__ g, const float* __restrict__ h0, float* __restrict__ ht, void* __restrict__ o,
    int out_bf16, int T, int H, int group, int V, float scale, int seg_chunks, int state_only, float* __restrict__ seg_state,
    float* __restrict__ seg_gate)
{
    constexpr int C = 64, LK = K + 8, LV = BV + 8, LG = K + 4, KS = K / 16, NV = BV / 8, NH = NV / 2;
    constexpr int SN = K == 128 ? NV : NV / 2;           // state n-tiles per warp
    constexpr int CPR = K / 4, RG = 256 / CPR, RPT = C / RG;  // gates: float4s per row, row groups, rows per thread
    extern __shared__ uint4 lc_smem4[];
    lc_bf16* Qs = (lc_bf16*)lc_smem4;          // [2][C][LK]
    lc_bf16* Ks = Qs + 2 * C * LK;             // [2][C][LK]
    lc_bf16* Vs = Ks + 2 * C * LK;             // [2][C][LV]
    lc_bf16* Sh = Vs + 2 * C * LV;             // [K][LV] state hi
    lc_bf16* Sl = Sh + K * LV;                 // [K][LV] state lo
    float* G = (float*)(Sl + K * LV);          // [C][LG] cumulative log2 gates of the chunk
    float* Tot = G + C * LG;                   // [RG][K] row-group sums of the gates

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    // 32-bit shared addresses (bytes) of the state halves, and the lane's part of the B-fragment addresses.
    const unsigned sSh = lc_smem_addr(Sh), sSl = lc_smem_addr(Sl), bOff = lc_b_off(LV, lane);
    const int NC = (T + C - 1) / C, P = (NC + seg_chunks - 1) / seg_chunks;
    const int v0 = blockIdx.x * BV, h = blockIdx.y, b = blockIdx.z / P, p = blockIdx.z - b * P;
    const int cBegin = p * seg_chunks, cEnd = min(NC, cBegin + seg_chunks);
    if (state_only && p == P - 1) return;  // the last segment's end state is not needed
    // g, v, o and the state hold H heads; q, k hold H / group under LINEA_GVA (value head h reads head hk = h / group),
    // else H.
    const int hk = LINEA_GVA ? h / group : h;
    const long gStride = (long)H * K, kStride = LINEA_GVA ? (long)(H / group) * K : gStride, vStride = (long)H * V;
    const lc_bf16* qb = q + (long)b * T * kStride + (long)hk * K;
    const lc_bf16* kb = k + (long)b * T * kStride + (long)hk * K;
    const lc_bf16* vb = v + (long)b * T * vStride + (long)h * V + v0;
    const float* gb = g + (long)b * T * gStride + (long)h * K;
    // Output row block I and column half: warps w and w + 4 share a scheduler, so they get blocks 3 - I and I
    // (the triangular score work balanced across the four schedulers).
    const int I = warp < 4 ? warp : 7 - warp, c0 = (warp >> 2) * (BV / 2);
    const int sm = K == 128 ? warp : (warp & 3), sn0 = K == 128 ? 0 : (warp >> 2) * SN;  // state m-tile, n-tiles
    const int grp = tid / CPR, gcol = (tid - grp * CPR) * 4, grow = grp * RPT;  // this thread's gate block

    auto load = [&](int c, int buf) {
        lc_load_tile<K, lc_bf16, 256>(Qs + buf * C * LK, qb, c * C, T, kStride);
        lc_load_tile<K, lc_bf16, 256>(Ks + buf * C * LK, kb, c * C, T, kStride);
        lc_load_tile<BV, lc_bf16, 256>(Vs + buf * C * LV, vb, c * C, T, vStride);
        lc_cp_commit();
    };
    float4 gr[RPT];  // raw gates of rows grow.., columns gcol.. (0 past T, so the cumulative sums stay flat there)
    auto loadGates = [&](int c) {
#pragma unroll
        for (int m = 0; m < RPT; ++m) {
            const int t = c * C + grow + m;
            gr[m] = t < T ? __ldg((const float4*)(gb + (long)t * gStride + gcol)) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
    };
    // G = inclusive cumulative sum over the chunk's rows, in log2 units (two barriers inside).
    auto cumsum = [&]() {
        const float l2e = 1.4426950408889634f;
        float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int m = 0; m < RPT; ++m) {
            s.x += gr[m].x * l2e; s.y += gr[m].y * l2e; s.z += gr[m].z * l2e; s.w += gr[m].w * l2e;
            gr[m] = s;
        }
        *(float4*)(Tot + grp * K + gcol) = s;
        __syncthreads();
        float4 off = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int u = 0; u < grp; ++u) {
            const float4 t = *(const float4*)(Tot + u * K + gcol);
            off.x += t.x; off.y += t.y; off.z += t.z; off.w += t.w;
        }
#pragma unroll
        for (int m = 0; m < RPT; ++m)
            *(float4*)(G + (grow + m) * LG + gcol) = make_float4(gr[m].x + off.x, gr[m].y + off.y, gr[m].z + off.z, gr[m].w + off.w);
    };

    float S[SN][4];
    const long sBase = ((long)b * H + h) * K * V + v0;
#pragma unroll
    for (int nt = 0; nt < SN; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int row = sm * 16 + gq + 8 * (e >> 1), col = (sn0 + nt) * 8 + 2 * tq + (e & 1);
            S[nt][e] = h0 && !state_only ? h0[sBase + (long)row * V + col] : 0.f;
        }
    if (!state_only) {
        for (int pp = 0; pp < p; ++pp) {  // carry the state through the end states of the earlier segments
            const long seg = (long)(b * P + pp) * H + h;
            const float d0 = lc_ex2(seg_gate[seg * K + sm * 16 + gq]), d1 = lc_ex2(seg_gate[seg * K + sm * 16 + gq + 8]);
            const float* st = seg_state + seg * K * V + v0;
#pragma unroll
            for (int nt = 0; nt < SN; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int row = sm * 16 + gq + 8 * (e >> 1), col = (sn0 + nt) * 8 + 2 * tq + (e & 1);
                    S[nt][e] = fmaf(e < 2 ? d0 : d1, S[nt][e], st[(long)row * V + col]);
                }
        }
    }
    float gsum0 = 0.f, gsum1 = 0.f;  // total log2 gate of this segment for state rows sm*16 + gq (+ 8)
    auto storeState = [&]() {
#pragma unroll
        for (int nt = 0; nt < SN; ++nt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int row = sm * 16 + gq + 8 * r, col = (sn0 + nt) * 8 + 2 * tq;
                unsigned hi, lo;
                lc_split(S[nt][2 * r], S[nt][2 * r + 1], hi, lo);
                *(unsigned*)(Sh + row * LV + col) = hi;
                *(unsigned*)(Sl + row * LV + col) = lo;
            }
    };
    storeState();
    load(cBegin, cBegin & 1);
    loadGates(cBegin);

    for (int c = cBegin; c < cEnd; ++c) {
        const int buf = c & 1;
        if (c + 1 < cEnd) load(c + 1, buf ^ 1);
        cumsum();
        if (c + 1 < cEnd) lc_cp_wait<1>();
        else lc_cp_wait<0>();
        __syncthreads();  // tiles of chunk c, its gates G; the state before chunk c in Sh/Sl
        const lc_bf16* Qt = Qs + buf * C * LK;
        const lc_bf16* Kt = Ks + buf * C * LK;
        const unsigned sVt = lc_smem_addr(Vs + buf * C * LV);
        const float* GL = G + (C - 1) * LG;

        // Outputs of row block I, compiled once per block (straight-line code: the triangular loop bounds are constants).
        auto rows = [&](auto tag) {
            constexpr int II = decltype(tag)::value, R0 = 16 * II;
            // Steepness of row block II: the largest gate span of either half of the block over the channels.
            float span = 0.f;
            for (int cc = lane; cc < K; cc += 32) {
                const float a = G[R0 * LG + cc], mid = G[(R0 + 8) * LG + cc], z = G[(R0 + 15) * LG + cc];
                span = fmaxf(span, fmaxf(a - mid, mid - z));
            }
#pragma unroll
            for (int m = 16; m; m >>= 1) span = fmaxf(span, __shfl_xor_sync(0xffffffffu, span, m));
            const bool steep = span > 80.f;
            const float* Rg = G + (steep ? R0 : R0 + 8) * LG;

            float s[8][4], acc[NH][4];
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
            for (int nt = 0; nt < NH; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
#pragma unroll 1
            for (int ks = 0; ks < KS; ++ks) {
                const int cA = ks * 16 + 2 * tq;
                const float2 Ra = *(const float2*)(Rg + cA), Rb = *(const float2*)(Rg + cA + 8);
                unsigned qh[4], ql[4], eh[4], el[4];  // q 2^{G - R} and q 2^G, rows R0.., channels ks*16..
#pragma unroll
                for (int q4 = 0; q4 < 4; ++q4) {
                    const int i = R0 + gq + 8 * (q4 & 1), cc = cA + 8 * (q4 >> 1);
                    const float2 qv = lc_pair(Qt + i * LK + cc), gv = *(const float2*)(G + i * LG + cc);
                    const float2 R = (q4 >> 1) ? Rb : Ra;
                    lc_split(qv.x * lc_ex2(gv.x - R.x), qv.y * lc_ex2(gv.y - R.y), qh[q4], ql[q4]);
                    lc_split(qv.x * lc_ex2(gv.x), qv.y * lc_ex2(gv.y), eh[q4], el[q4]);
                }
                // Scores against keys 0 .. R0 + 15 (B = (k 2^{R - G})^T, built in registers).
#pragma unroll
                for (int nt = 0; nt < 8; ++nt) {
                    if (nt > 2 * II + 1) break;
                    const int j = nt * 8 + gq;
                    const float2 k0 = lc_pair(Kt + j * LK + cA), k1 = lc_pair(Kt + j * LK + cA + 8);
                    const float2 g0 = *(const float2*)(G + j * LG + cA), g1 = *(const float2*)(G + j * LG + cA + 8);
                    unsigned bh0, bl0, bh1, bl1;
                    lc_split(k0.x * lc_ex2(Ra.x - g0.x), k0.y * lc_ex2(Ra.y - g0.y), bh0, bl0);
                    lc_split(k1.x * lc_ex2(Rb.x - g1.x), k1.y * lc_ex2(Rb.y - g1.y), bh1, bl1);
                    lc_mma(s[nt], qh, bh0, bh1);
                    lc_mma(s[nt], ql, bh0, bh1);
                    lc_mma(s[nt], qh, bl0, bl1);
                }
                // Inter-chunk part: (q 2^G) S, columns c0 .. c0 + BV/2.
#pragma unroll
                for (int np = 0; np < NH / 2; ++np) {
                    unsigned bh[4], bl[4];
                    lc_ldsm_b(bh, sSh, LV, ks * 16, c0 + np * 16, bOff);
                    lc_ldsm_b(bl, sSl, LV, ks * 16, c0 + np * 16, bOff);
                    lc_mma2(acc[2 * np], acc[2 * np + 1], eh, bh);
                    lc_mma2(acc[2 * np], acc[2 * np + 1], el, bh);
                    lc_mma2(acc[2 * np], acc[2 * np + 1], eh, bl);
                }
            }
            // Diagonal block: causal mask; for steep gates the direct sum over channels.
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                if (nt > 2 * II + 1) break;
                if (nt < 2 * II) continue;
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int i = R0 + gq + 8 * (e >> 1), j = nt * 8 + 2 * tq + (e & 1);
                    if (j > i) {
                        s[nt][e] = 0.f;
                    } else if (steep) {
                        float d = 0.f;
                        for (int cc = 0; cc < K; cc += 2) {
                            const float2 qv = lc_pair(Qt + i * LK + cc), kv = lc_pair(Kt + j * LK + cc);
                            const float2 gi = *(const float2*)(G + i * LG + cc), gj = *(const float2*)(G + j * LG + cc);
                            d = fmaf(qv.x * kv.x, lc_ex2(gi.x - gj.x), d);
                            d = fmaf(qv.y * kv.y, lc_ex2(gi.y - gj.y), d);
                        }
                        s[nt][e] = d;
                    }
                }
            }
            // Intra-chunk part: scores (hi + lo) times v.
#pragma unroll
            for (int kk = 0; kk < 4; ++kk) {
                if (kk > II) break;
                unsigned ah[4], al[4];
                lc_split_a(s[2 * kk], s[2 * kk + 1], ah, al);
#pragma unroll
                for (int np = 0; np < NH / 2; ++np) {
                    unsigned bv[4];
                    lc_ldsm_b(bv, sVt, LV, kk * 16, c0 + np * 16, bOff);
                    lc_mma2(acc[2 * np], acc[2 * np + 1], ah, bv);
                    lc_mma2(acc[2 * np], acc[2 * np + 1], al, bv);
                }
            }
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int t = c * C + R0 + gq + 8 * r;
                if (t >= T) continue;
                const long base = ((long)b * T + t) * vStride + (long)h * V + v0 + c0;
#pragma unroll
                for (int nt = 0; nt < NH; ++nt) {
                    const int col = nt * 8 + 2 * tq;
                    const float x0 = scale * acc[nt][2 * r], x1 = scale * acc[nt][2 * r + 1];
                    if (out_bf16) *(unsigned*)((lc_bf16*)o + base + col) = lc_pack(x0, x1);
                    else *(float2*)((float*)o + base + col) = make_float2(x0, x1);
                }
            }
        };
        if (!state_only) {
            switch (I) {
            case 0: rows(lc_int<0>()); break;
            case 1: rows(lc_int<1>()); break;
            case 2: rows(lc_int<2>()); break;
            default: rows(lc_int<3>()); break;
            }
        }

        if (c + 1 < cEnd) loadGates(c + 1);  // here, so that the prefetched gates hold registers only from now on
        // State: S <- diag(2^{G_last}) S + (k 2^{G_last - G})^T v (m-tile sm, n-tiles sn0..; A built in registers).
        {
            const int ch = 16 * sm + gq;
            const float gl0 = GL[ch], gl1 = GL[ch + 8];
            gsum0 += gl0;
            gsum1 += gl1;
            const float d0 = lc_ex2(gl0), d1 = lc_ex2(gl1);
#pragma unroll
            for (int nt = 0; nt < SN; ++nt) {
                S[nt][0] *= d0; S[nt][1] *= d0; S[nt][2] *= d1; S[nt][3] *= d1;
            }
#pragma unroll
            for (int kk = 0; kk < 4; ++kk) {
                unsigned ah[4], al[4];
#pragma unroll
                for (int q4 = 0; q4 < 4; ++q4) {
                    const int row = ch + 8 * (q4 & 1), tok = 16 * kk + 2 * tq + 8 * (q4 >> 1);
                    const float gl = (q4 & 1) ? gl1 : gl0;
                    const float x0 = lc_bf(Kt[tok * LK + row]) * lc_ex2(gl - G[tok * LG + row]);
                    const float x1 = lc_bf(Kt[(tok + 1) * LK + row]) * lc_ex2(gl - G[(tok + 1) * LG + row]);
                    lc_split(x0, x1, ah[q4], al[q4]);
                }
#pragma unroll
                for (int np = 0; np < SN / 2; ++np) {
                    unsigned bv[4];
                    lc_ldsm_b(bv, sVt, LV, kk * 16, (sn0 + 2 * np) * 8, bOff);
                    lc_mma2(S[2 * np], S[2 * np + 1], ah, bv);
                    lc_mma2(S[2 * np], S[2 * np + 1], al, bv);
                }
            }
        }
        __syncthreads();  // every warp is done with Sh/Sl, G and the tiles of chunk c
        storeState();
    }
    float* out = state_only ? seg_state + ((long)(b * P + p) * H + h) * K * V + v0 : (p == P - 1 ? ht : 0);
    if (out) {
        const long base = state_only ? 0 : sBase;
#pragma unroll
        for (int nt = 0; nt < SN; ++nt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int row = sm * 16 + gq + 8 * r, col = (sn0 + nt) * 8 + 2 * tq;
                *(float2*)(out + base + (long)row * V + col) = make_float2(S[nt][2 * r], S[nt][2 * r + 1]);
            }
    }
    if (state_only && blockIdx.x == 0 && tq == 0 && sn0 == 0) {
        const long seg = (long)(b * P + p) * H + h;
        seg_gate[seg * K + sm * 16 + gq] = gsum0;
        seg_gate[seg * K + sm * 16 + gq + 8] = gsum1;
    }
}

extern "C" __global__ void __launch_bounds__(256) linea_gla_fwd_k64_v64(
    const lc_bf16* q, const lc_bf16* k, const lc_bf16* v, const float* g, const float* h0, float* ht, void* o,
    int out_bf16, int T, int H, int group, int V, float scale, int seg_chunks, int state_only, float* seg_state,
    float* seg_gate) {
    lg_gla_fwd<64, 64>(q, k, v, g, h0, ht, o, out_bf16, T, H, group, V, scale, seg_chunks, state_only, seg_state, seg_gate);
}
extern "C" __global__ void __launch_bounds__(256) linea_gla_fwd_k64_v128(
    const lc_bf16* q, const lc_bf16* k, const lc_bf16* v, const float* g, const float* h0, float* ht, void* o,
    int out_bf16, int T, int H, int group, int V, float scale, int seg_chunks, int state_only, float* seg_state,
    float* seg_gate) {
    lg_gla_fwd<64, 128>(q, k, v, g, h0, ht, o, out_bf16, T, H, group, V, scale, seg_chunks, state_only, seg_state, seg_gate);
}
extern "C" __global__ void __launch_bounds__(256) linea_gla_fwd_k128_v64(
    const lc_bf16* q, const lc_bf16* k, const lc_bf16* v, const float* g, const float* h0, float* ht, void* o,
    int out_bf16, int T, int H, int group, int V, float scale, int seg_chunks, int state_only, float* seg_state,
    float* seg_gate) {
    lg_gla_fwd<128, 64>(q, k, v, g, h0, ht, o, out_bf16, T, H, group, V, scale, seg_chunks, state_only, seg_state, seg_gate);
}
extern "C" __global__ void __launch_bounds__(256) linea_gla_fwd_k128_v128(
    const lc_bf16* q, const lc_bf16* k, const lc_bf16* v, const float* g, const float* h0, float* ht, void* o,
    int out_bf16, int T, int H, int group, int V, float scale, int seg_chunks, int state_only, float* seg_state,
    float* seg_gate) {
    lg_gla_fwd<128, 128>(q, k, v, g, h0, ht, o, out_bf16, T, H, group, V, scale, seg_chunks, state_only, seg_state, seg_gate);
}
