// Linea: chunked kda forward (Kimi Delta Attention, fla's chunk_kda) on tensor cores, chunks of C = 64 tokens.
// Per value head: S_t = diag(e^{g_t}) S_{t-1}; S_t += k_t (beta_t (v_t - S_t^T k_t))^T; o_t = scale S_t^T q_t.
// q, k [B,T,H/group,K], v [B,T,H,V] bf16 (H value heads; value head h reads q/k head h / group, fla's GVA);
// g [B,T,H,K] fp32 natural-log gates <= 0, beta [B,T,H] fp32; h0/ht [B,H,K,V] fp32 (either may be null); o bf16 or fp32.
//
// Two kernels. With G the inclusive cumulative log2 gate of a chunk per channel (from the chunk start, so G <= 0 and
// decreasing) and S the state before the chunk:
//  1. linea_kda_prep_k{K}_v{V}, one block of 4 warps per (chunk, value head, batch), everything that does not depend on
//     S: A_kk = beta_i sum_c k_ic k_jc 2^{G_ic - G_jc} (j < i), T = (I + A_kk)^{-1}, w = T diag(beta) (k 2^G) (bf16),
//     u = T diag(beta) v (fp32), A_qk = scale sum_c q_ic k_jc 2^{G_ic - G_jc} (j <= i), q 2^G and k 2^{G_last - G}
//     (hi + lo bf16 planes each) and 2^{G_last} (fp32, per channel).
//  2. linea_kda_walk_k{K}_v{BV}, one block of BV / 16 warps per (BV columns of V, value head, batch) walks the chunks
//     in order with S^T in fp32 registers (the delta rules' transposed layout, chunked_delta.cuh; warp w owns 16
//     columns) and per chunk runs
//        U^T = u^T - S^T w^T,  o^T = scale S^T (q 2^G)^T + U^T A_qk^T,  S^T <- S^T diag(2^{G_last}) + U^T (k 2^{G_last - G})
//  Long sequences with few heads: the chunks are cut into P segments walked in parallel (grid.z = B * P); first
//  linea_kda_end_k{K} gives each segment's end state from zero and its K x K transition, and the delta rules' scan
//  (chunked_scan.cu) turns them into the segments' start states.
// Every exponent the kernels take is <= 0 except the bounded reference-row factors below, so a chunk whose summed
// log decay is far below -100 stays finite (what underflows is below the fp32 resolution of the sums it enters).
// The intra-chunk scores use gla's reference rows (chunked_gla.cu): warp I forms rows 16 I .. of A_kk and A_qk as
// (x_i 2^{G_i - R}) . (k_j 2^{R - G_j}) with R the middle row of its 16-row block, so every factor stays within 2^{+-80}
// while the gates of either half of the block span at most 80 (log2) in every channel; beyond that (steep gates) R is
// the block's first row (factors <= 1 left of the block) and the 16 x 16 diagonal block is summed directly, channel by
// channel, with 2^{G_i - G_j} <= 1.
// Every bf16 MMA operand made from fp32 values is split hi + lo (lc_split) so that results stay near fp32 accuracy;
// w is stored as bf16 as the delta rules' (lab/chunked_kda_emulate.py emulates both kernels and gives the figures).
// linea-nvrtc-variant: gva -DLINEA_GVA=1  (grouped value heads, HV > H: chunked_common.cuh)
#include "chunked_delta.cuh"

// The prepass of one chunk of value head h. Outputs (rows past T not written): w [B,T,H,K] bf16, u [B,T,H,V] fp32,
// qgh/qgl = q 2^G and kdh/kdl = k 2^{G_last - G} [B,T,H,K] bf16 (hi, lo), aqh/aql = A_qk [B,T,H,64] bf16 (hi, lo; zero
// above the diagonal), gl = 2^{G_last} [B,NC,H,K] fp32. About 104 KB of shared memory at K = V = 128 (two blocks/SM).
template <int K, int VD>
__device__ __forceinline__ void lk_kda_prep(
    const lc_bf16* __restrict__ q, const lc_bf16* __restrict__ k, const lc_bf16* __restrict__ v,
    const float* __restrict__ g, const float* __restrict__ beta, int T, int H, int group, float scale,
    lc_bf16* __restrict__ w, float* __restrict__ u, lc_bf16* __restrict__ qgh, lc_bf16* __restrict__ qgl,
    lc_bf16* __restrict__ kdh, lc_bf16* __restrict__ kdl, lc_bf16* __restrict__ aqh, lc_bf16* __restrict__ aql,
    float* __restrict__ gl)
{
    constexpr int C = 64, LK = K + 8, LV = VD + 8, LG = K + 4, LA = C + 4;
    constexpr int CPR = K / 4, RG = 128 / CPR, RPT = C / RG;  // gates: float4s per row, row groups, rows per thread
    extern __shared__ uint4 lc_smem4[];
    lc_bf16* Qs = (lc_bf16*)lc_smem4;   // [C][LK] q, then (k 2^G) hi
    lc_bf16* Ks = Qs + C * LK;          // [C][LK]
    lc_bf16* Vs = Ks + C * LK;          // [C][LV]
    float* G = (float*)(Vs + C * LV);   // [C][LG] cumulative log2 gates, then (k 2^G) lo as bf16 [C][LK]
    float* L = G + C * LG;              // [C][LA] strictly lower A_kk, then T block by block
    float* Bt = L + C * LA;             // [C] beta
    float* Tot = Bt + C;                // [RG][K] row-group sums of the gates
    lc_bf16* KGh = Qs;
    lc_bf16* KGl = (lc_bf16*)G;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const int c = blockIdx.x, h = blockIdx.y, b = blockIdx.z, t0 = c * C, NC = gridDim.x;
    // g, v and every output hold H heads; q, k hold H / group under LINEA_GVA (value head h reads head hk = h / group).
    const int hk = LINEA_GVA ? h / group : h;
    const long gStride = (long)H * K, kStride = LINEA_GVA ? (long)(H / group) * K : gStride, vStride = (long)H * VD;
    lc_load_tile<K, lc_bf16, 128>(Qs, q + (long)b * T * kStride + (long)hk * K, t0, T, kStride);
    lc_load_tile<K, lc_bf16, 128>(Ks, k + (long)b * T * kStride + (long)hk * K, t0, T, kStride);
    lc_load_tile<VD, lc_bf16, 128>(Vs, v + (long)b * T * vStride + (long)h * VD, t0, T, vStride);
    lc_cp_commit();
    // G: thread (grp, gcol) sums rows grow .. grow + RPT - 1 of channels gcol .. gcol + 3, then adds the earlier groups'
    // totals (gates past T are 0, so G stays flat there).
    {
        const float l2e = 1.4426950408889634f;
        const int grp = tid / CPR, gcol = (tid - grp * CPR) * 4, grow = grp * RPT;
        const float* gb = g + (long)b * T * gStride + (long)h * K + gcol;
        float4 s = make_float4(0.f, 0.f, 0.f, 0.f), run[RPT];
#pragma unroll
        for (int m = 0; m < RPT; ++m) {
            const int t = t0 + grow + m;
            const float4 x = t < T ? __ldg((const float4*)(gb + (long)t * gStride)) : make_float4(0.f, 0.f, 0.f, 0.f);
            s.x += x.x * l2e; s.y += x.y * l2e; s.z += x.z * l2e; s.w += x.w * l2e;
            run[m] = s;
        }
        *(float4*)(Tot + grp * K + gcol) = s;
        if (tid < C) Bt[tid] = t0 + tid < T ? beta[((long)b * T + t0 + tid) * H + h] : 0.f;
        __syncthreads();
        float4 off = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int p = 0; p < grp; ++p) {
            const float4 x = *(const float4*)(Tot + p * K + gcol);
            off.x += x.x; off.y += x.y; off.z += x.z; off.w += x.w;
        }
#pragma unroll
        for (int m = 0; m < RPT; ++m)
            *(float4*)(G + (grow + m) * LG + gcol) =
                make_float4(run[m].x + off.x, run[m].y + off.y, run[m].z + off.z, run[m].w + off.w);
    }
    lc_cp_wait<0>();
    __syncthreads();  // tiles and G in

    // Scores of rows 16 I .. 16 I + 15 (warp I) against keys 0 .. 16 I + 15, compiled per I (constant loop bounds).
    auto rows = [&](auto tag) {
        constexpr int II = decltype(tag)::value, R0 = 16 * II, NT = 2 * II + 2;
        float span = 0.f;  // the largest gate span of either half of the block over the channels
        for (int cc = lane; cc < K; cc += 32) {
            const float a = G[R0 * LG + cc], mid = G[(R0 + 8) * LG + cc], z = G[(R0 + 15) * LG + cc];
            span = fmaxf(span, fmaxf(a - mid, mid - z));
        }
#pragma unroll
        for (int m = 16; m; m >>= 1) span = fmaxf(span, __shfl_xor_sync(0xffffffffu, span, m));
        const bool steep = span > 80.f;
        const float* Rg = G + (steep ? R0 : R0 + 8) * LG;
        float sk[NT][4], sq[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) sk[nt][e] = sq[nt][e] = 0.f;
#pragma unroll 1
        for (int ks = 0; ks < K / 16; ++ks) {
            const int cA = ks * 16 + 2 * tq;
            const float2 Ra = *(const float2*)(Rg + cA), Rb = *(const float2*)(Rg + cA + 8);
            unsigned qh[4], ql[4], kh[4], kl[4];  // q 2^{G - R}, k 2^{G - R}: rows R0 .., channels 16 ks ..
#pragma unroll
            for (int q4 = 0; q4 < 4; ++q4) {
                const int i = R0 + gq + 8 * (q4 & 1), cc = cA + 8 * (q4 >> 1);
                const float2 qv = lc_pair(Qs + i * LK + cc), kv = lc_pair(Ks + i * LK + cc);
                const float2 gv = *(const float2*)(G + i * LG + cc), R = (q4 >> 1) ? Rb : Ra;
                const float f0 = lc_ex2(gv.x - R.x), f1 = lc_ex2(gv.y - R.y);
                lc_split(qv.x * f0, qv.y * f1, qh[q4], ql[q4]);
                lc_split(kv.x * f0, kv.y * f1, kh[q4], kl[q4]);
            }
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {  // B = (k 2^{R - G})^T, keys nt * 8 .., built in registers
                const int j = nt * 8 + gq;
                const float2 k0 = lc_pair(Ks + j * LK + cA), k1 = lc_pair(Ks + j * LK + cA + 8);
                const float2 g0 = *(const float2*)(G + j * LG + cA), g1 = *(const float2*)(G + j * LG + cA + 8);
                unsigned bh0, bl0, bh1, bl1;
                lc_split(k0.x * lc_ex2(Ra.x - g0.x), k0.y * lc_ex2(Ra.y - g0.y), bh0, bl0);
                lc_split(k1.x * lc_ex2(Rb.x - g1.x), k1.y * lc_ex2(Rb.y - g1.y), bh1, bl1);
                lc_mma(sq[nt], qh, bh0, bh1);
                lc_mma(sq[nt], ql, bh0, bh1);
                lc_mma(sq[nt], qh, bl0, bl1);
                lc_mma(sk[nt], kh, bh0, bh1);
                lc_mma(sk[nt], kl, bh0, bh1);
                lc_mma(sk[nt], kh, bl0, bl1);
            }
        }
        // Diagonal block: the causal masks (A_qk keeps j = i, A_kk not) and, for steep gates, the direct sums (what the
        // products left there may be inf or NaN from factors past 2^80: replaced, never used).
#pragma unroll
        for (int nt = 2 * II; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int i = R0 + gq + 8 * (e >> 1), j = nt * 8 + 2 * tq + (e & 1);
                if (j > i) {
                    sq[nt][e] = sk[nt][e] = 0.f;
                } else if (steep) {
                    float dq = 0.f, dk = 0.f;
                    for (int cc = 0; cc < K; cc += 2) {
                        const float2 qv = lc_pair(Qs + i * LK + cc), ki = lc_pair(Ks + i * LK + cc), kj = lc_pair(Ks + j * LK + cc);
                        const float2 gi = *(const float2*)(G + i * LG + cc), gj = *(const float2*)(G + j * LG + cc);
                        const float d0 = lc_ex2(gi.x - gj.x), d1 = lc_ex2(gi.y - gj.y);
                        dq = fmaf(qv.x * kj.x, d0, dq);
                        dq = fmaf(qv.y * kj.y, d1, dq);
                        dk = fmaf(ki.x * kj.x, d0, dk);
                        dk = fmaf(ki.y * kj.y, d1, dk);
                    }
                    sq[nt][e] = dq;
                    sk[nt][e] = j < i ? dk : 0.f;
                } else if (j == i) {
                    sk[nt][e] = 0.f;
                }
            }
        // L = beta_i A_kk rows (zero right of the block); A_qk hi + lo to memory (zero right of the block too).
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int i = R0 + gq + 8 * r, j = nt * 8 + 2 * tq;
                const float bi = Bt[i];
                const float l0 = nt < NT ? bi * sk[nt < NT ? nt : 0][2 * r] : 0.f;
                const float l1 = nt < NT ? bi * sk[nt < NT ? nt : 0][2 * r + 1] : 0.f;
                *(float2*)(L + i * LA + j) = make_float2(l0, l1);
                if (t0 + i < T) {
                    const float a0 = nt < NT ? scale * sq[nt < NT ? nt : 0][2 * r] : 0.f;
                    const float a1 = nt < NT ? scale * sq[nt < NT ? nt : 0][2 * r + 1] : 0.f;
                    unsigned hi, lo;
                    lc_split(a0, a1, hi, lo);
                    const long at = ((long)b * T + t0 + i) * H * C + (long)h * C + j;
                    *(unsigned*)(aqh + at) = hi;
                    *(unsigned*)(aql + at) = lo;
                }
            }
    };
    switch (warp) {
    case 0: rows(lc_int<0>()); break;
    case 1: rows(lc_int<1>()); break;
    case 2: rows(lc_int<2>()); break;
    default: rows(lc_int<3>()); break;
    }

    // q 2^G and k 2^{G_last - G} (hi + lo) and 2^{G_last}, for the walk; k 2^G (hi + lo) into registers for w.
    const float* GL = G + (C - 1) * LG;
#pragma unroll 4
    for (int x = tid; x < C * K / 2; x += 128) {
        const int i = x / (K / 2), cc = 2 * (x - i * (K / 2));
        if (t0 + i >= T) continue;
        const float2 qv = lc_pair(Qs + i * LK + cc), kv = lc_pair(Ks + i * LK + cc);
        const float2 gv = *(const float2*)(G + i * LG + cc), gL = *(const float2*)(GL + cc);
        const long at = ((long)b * T + t0 + i) * gStride + (long)h * K + cc;
        unsigned hi, lo;
        lc_split(qv.x * lc_ex2(gv.x), qv.y * lc_ex2(gv.y), hi, lo);
        *(unsigned*)(qgh + at) = hi;
        *(unsigned*)(qgl + at) = lo;
        lc_split(kv.x * lc_ex2(gL.x - gv.x), kv.y * lc_ex2(gL.y - gv.y), hi, lo);
        *(unsigned*)(kdh + at) = hi;
        *(unsigned*)(kdl + at) = lo;
    }
    if (tid < K) gl[(((long)b * NC + c) * H + h) * K + tid] = lc_ex2(GL[tid]);
    constexpr int PER = C * K / 2 / 128;
    unsigned kgh[PER], kgl[PER];
#pragma unroll
    for (int m = 0; m < PER; ++m) {
        const int x = tid + 128 * m, i = x / (K / 2), cc = 2 * (x - i * (K / 2));
        const float2 kv = lc_pair(Ks + i * LK + cc), gv = *(const float2*)(G + i * LG + cc);
        lc_split(kv.x * lc_ex2(gv.x), kv.y * lc_ex2(gv.y), kgh[m], kgl[m]);
    }
    __syncthreads();  // q and G are no longer read: their space takes k 2^G hi and lo
#pragma unroll
    for (int m = 0; m < PER; ++m) {
        const int x = tid + 128 * m, i = x / (K / 2), cc = 2 * (x - i * (K / 2));
        *(unsigned*)(KGh + i * LK + cc) = kgh[m];
        *(unsigned*)(KGl + i * LK + cc) = kgl[m];
    }

    // T = (I + L)^{-1}, blocked by 16 as chunked_wy.cu (warp r makes block row r, written over L's). Diagonal blocks by
    // forward substitution in fp32, lane l solving column l & 15; warp r wrote only its own rows of L.
    __syncwarp();
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
        __syncwarp();
        if (lane < 16) {
#pragma unroll
            for (int i = 0; i < 16; ++i) D[i * LA + j] = a[i];
        }
        __syncwarp();
    }
    // Off the diagonal: T_rj = -sum_{m=j}^{r-1} Z_rm T_mj with Z_rm = T_rr L_rm (hi + lo products), one block barrier
    // per distance r - j.
    {
        const int r0 = 16 * warp;
        unsigned zh[3][4], zl[3][4], dh[4], dl[4];
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
        __syncthreads();  // every diagonal block of T is in (and k 2^G's tiles)
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
    // Rows 16 warp .. of T diag(beta) (hi + lo A fragments) times k 2^G (hi + lo: w) or v (u).
    const int r0 = 16 * warp;
    auto product = [&](const lc_bf16* Xh, const lc_bf16* Xl, int ldx, auto nTag, auto fp32Tag, void* out, long stride) {
        constexpr int N = decltype(nTag)::value;
        constexpr bool F32 = decltype(fp32Tag)::value;
        const unsigned off = lc_b_off(ldx, lane), xh = lc_smem_addr(Xh) + off, xl = lc_smem_addr(Xl) + off;
        float acc[N / 8][4];
#pragma unroll
        for (int nt = 0; nt < N / 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
            if (kk > warp) break;  // T is lower triangular
            unsigned ah[4], al[4];
#pragma unroll
            for (int q4 = 0; q4 < 4; ++q4) {
                const int i = r0 + gq + 8 * (q4 & 1), j = kk * 16 + 2 * tq + 8 * (q4 >> 1);
                lc_split(L[i * LA + j] * Bt[j], L[i * LA + j + 1] * Bt[j + 1], ah[q4], al[q4]);
            }
#pragma unroll
            for (int np = 0; np < N / 16; ++np) {
                unsigned bx[4];
                lc_ldsm_t(bx, xh + (kk * 16 * ldx + np * 16) * 2);
                lc_mma2(acc[2 * np], acc[2 * np + 1], ah, bx);
                lc_mma2(acc[2 * np], acc[2 * np + 1], al, bx);
                if (!F32) {  // w: the lo part of k 2^G too
                    lc_ldsm_t(bx, xl + (kk * 16 * ldx + np * 16) * 2);
                    lc_mma2(acc[2 * np], acc[2 * np + 1], ah, bx);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int t = t0 + r0 + gq + 8 * r;
            if (t >= T) continue;
#pragma unroll
            for (int nt = 0; nt < N / 8; ++nt) {
                const long at = ((long)b * T + t) * stride + (long)h * N + nt * 8 + 2 * tq;
                if (F32) *(float2*)((float*)out + at) = make_float2(acc[nt][2 * r], acc[nt][2 * r + 1]);
                else *(unsigned*)((lc_bf16*)out + at) = lc_pack(acc[nt][2 * r], acc[nt][2 * r + 1]);
            }
        }
    };
    product(KGh, KGl, LK, lc_int<K>(), lc_int<0>(), w, gStride);
    product(Vs, Vs, LV, lc_int<VD>(), lc_int<1>(), u, vStride);
}

// One chunk's state step of the walk and the end pass: S^T <- S^T diag(2^{G_last}) + U^T (k 2^{G_last - G}), with
// gl = 2^{G_last} [K] and the decayed k as hi + lo [64][K + 8] bf16 tiles at shared addresses kh, kl (lane offset
// included); U^T split hi + lo, lo x lo dropped.
template <int K>
__device__ __forceinline__ void lk_state_step(float (*St)[4], float (*Ut)[4], const float* gl, unsigned kh, unsigned kl, int tq) {
    constexpr int LK = K + 8;
#pragma unroll
    for (int n = 0; n < K / 8; ++n) {
        const float2 d = *(const float2*)(gl + 8 * n + 2 * tq);
        St[n][0] *= d.x; St[n][1] *= d.y; St[n][2] *= d.x; St[n][3] *= d.y;
    }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
        unsigned ah[4], al[4];
        lc_split_a(Ut[2 * kk], Ut[2 * kk + 1], ah, al);
#pragma unroll
        for (int np = 0; np < K / 16; ++np) {
            unsigned bk[4];
            lc_ldsm_t(bk, kh + (kk * 16 * LK + np * 16) * 2);
            lc_mma2(St[2 * np], St[2 * np + 1], ah, bk);
            lc_mma2(St[2 * np], St[2 * np + 1], al, bk);
            lc_ldsm_t(bk, kl + (kk * 16 * LK + np * 16) * 2);
            lc_mma2(St[2 * np], St[2 * np + 1], ah, bk);
        }
    }
}

// The walk over the chunks of (BV columns from blockIdx.x * BV, value head, batch), BV / 16 warps. Shared memory:
// k 2^{G_last - G} hi/lo, A_qk hi/lo and 2^{G_last} double-buffered (one chunk ahead); q 2^G hi/lo, w and u single-
// buffered, loaded for the next chunk once this chunk's products with them are done (as lc_chunk_fwd_delta). About
// 177 KB at K = 128, BV = 64 (194 KB at BV = 128): one block per SM.
template <int K, int BV>
__device__ __forceinline__ void lk_kda_walk(
    const lc_bf16* __restrict__ qgh, const lc_bf16* __restrict__ qgl, const lc_bf16* __restrict__ kdh,
    const lc_bf16* __restrict__ kdl, const lc_bf16* __restrict__ w, const float* __restrict__ u,
    const lc_bf16* __restrict__ aqh, const lc_bf16* __restrict__ aql, const float* __restrict__ gl,
    const float* __restrict__ h0, float* __restrict__ ht, void* __restrict__ o, int out_bf16, int T, int H, int V, float scale,
    int seg_chunks, const float* __restrict__ seg_state)
{
    constexpr int C = 64, NW = BV / 16, NTH = 32 * NW, LK = K + 8, LU = BV + 4, LP = C + 8, KN = K / 8;
    extern __shared__ uint4 lc_smem4[];
    lc_bf16* KDh = (lc_bf16*)lc_smem4;   // [2][C][LK]
    lc_bf16* KDl = KDh + 2 * C * LK;     // [2][C][LK]
    lc_bf16* Ph = KDl + 2 * C * LK;      // [2][C][LP] A_qk hi
    lc_bf16* Pl = Ph + 2 * C * LP;       // [2][C][LP] A_qk lo
    lc_bf16* Qh = Pl + 2 * C * LP;       // [C][LK] q 2^G hi
    lc_bf16* Ql = Qh + C * LK;           // [C][LK] q 2^G lo
    lc_bf16* Ws = Ql + C * LK;           // [C][LK]
    float* Us = (float*)(Ws + C * LK);   // [C][LU]
    float* Gl = Us + C * LU;             // [2][K] 2^{G_last}
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const int mat = lane >> 3, r8 = lane & 7;
    const int NC = (T + C - 1) / C, P = (NC + seg_chunks - 1) / seg_chunks;
    const int v0 = blockIdx.x * BV, h = blockIdx.y, b = blockIdx.z / P, p = blockIdx.z - b * P;
    const int cBegin = p * seg_chunks, cEnd = min(NC, cBegin + seg_chunks);
    const long kStride = (long)H * K, vStride = (long)H * V, pStride = (long)H * C;
    const long kBase = (long)b * T * kStride + (long)h * K, pBase = (long)b * T * pStride + (long)h * C;
    const float* ub = u + (long)b * T * vStride + (long)h * V + v0;
    const int col0 = 16 * warp;  // the warp's state columns of the block's BV
    const unsigned sKDh = lc_smem_addr(KDh), sKDl = lc_smem_addr(KDl), sPh = lc_smem_addr(Ph), sPl = lc_smem_addr(Pl),
                   sQh = lc_smem_addr(Qh), sQl = lc_smem_addr(Ql), sW = lc_smem_addr(Ws);
    const unsigned nOff = ((mat >> 1) * 8 * LK + r8 * LK + (mat & 1) * 8) * 2;  // B = X^T of a [C][LK] tile X
    const unsigned pOff = ((mat >> 1) * 8 * LP + r8 * LP + (mat & 1) * 8) * 2;  // B = P^T of a [C][LP] tile P
    const unsigned kOff = lc_b_off(LK, lane);                                    // B = X (tokens x keys)
    auto loadAhead = [&](int c, int buf) {
        lc_load_tile<K, lc_bf16, NTH>(KDh + buf * C * LK, kdh + kBase, c * C, T, kStride);
        lc_load_tile<K, lc_bf16, NTH>(KDl + buf * C * LK, kdl + kBase, c * C, T, kStride);
        lc_load_tile<C, lc_bf16, NTH>(Ph + buf * C * LP, aqh + pBase, c * C, T, pStride);
        lc_load_tile<C, lc_bf16, NTH>(Pl + buf * C * LP, aql + pBase, c * C, T, pStride);
        if (tid < K / 4)
            lc_cp_async16(lc_smem_addr(Gl + buf * K + 4 * tid), gl + (((long)b * NC + c) * H + h) * K + 4 * tid, true);
        lc_cp_commit();
    };
    auto loadQWU = [&](int c) {
        lc_load_tile<K, lc_bf16, NTH>(Qh, qgh + kBase, c * C, T, kStride);
        lc_load_tile<K, lc_bf16, NTH>(Ql, qgl + kBase, c * C, T, kStride);
        lc_load_tile<K, lc_bf16, NTH>(Ws, w + kBase, c * C, T, kStride);
        lc_load_tile<BV, float, NTH>(Us, ub, c * C, T, vStride);
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
    loadAhead(cBegin, cBegin & 1);
    loadQWU(cBegin);
    for (int c = cBegin; c < cEnd; ++c) {
        const int buf = c & 1;
        lc_cp_wait<0>();
        __syncthreads();  // chunk c's tiles are in; every warp is done with chunk c - 1's (the other buffer)
        if (c + 1 < cEnd) loadAhead(c + 1, buf ^ 1);
        // X = S^T w^T and Y = S^T (q 2^G)^T (16 columns x 64 tokens each), S^T split once per 16 keys.
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
                lc_ldsm(bf, sQh + nOff + (np * 16 * LK + ks * 16) * 2);
                lc_mma2(Ot[2 * np], Ot[2 * np + 1], ah, bf);
                lc_mma2(Ot[2 * np], Ot[2 * np + 1], al, bf);
                lc_ldsm(bf, sQl + nOff + (np * 16 * LK + ks * 16) * 2);
                lc_mma2(Ot[2 * np], Ot[2 * np + 1], ah, bf);
            }
        }
        // U^T = u^T - X; o^T = scale Y so far.
#pragma unroll
        for (int n = 0; n < 8; ++n) {
            const int j = 8 * n + 2 * tq;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                Ut[n][e] = Us[(j + (e & 1)) * LU + col0 + gq + 8 * (e >> 1)] - Ut[n][e];
                Ot[n][e] *= scale;
            }
        }
        __syncthreads();  // q 2^G, w and u of chunk c are no longer read
        if (c + 1 < cEnd) loadQWU(c + 1);
        // o^T += U^T A_qk^T: key tiles kk (16 tokens j) against the output tokens i >= j.
        const unsigned sPht = sPh + buf * C * LP * 2, sPlt = sPl + buf * C * LP * 2;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
            unsigned uh[4], ul[4];
            lc_split_a(Ut[2 * kk], Ut[2 * kk + 1], uh, ul);
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                if (np < kk) continue;  // output tokens 16 np .. all before key tile kk: masked
                unsigned bh[4], bl[4];
                lc_ldsm(bh, sPht + pOff + (np * 16 * LP + kk * 16) * 2);
                lc_ldsm(bl, sPlt + pOff + (np * 16 * LP + kk * 16) * 2);
                lc_mma2(Ot[2 * np], Ot[2 * np + 1], uh, bh);
                lc_mma2(Ot[2 * np], Ot[2 * np + 1], ul, bh);
                lc_mma2(Ot[2 * np], Ot[2 * np + 1], uh, bl);
            }
        }
        // The chunk's outputs, columns v0 + col0 + the warp's 16.
        lc_store_ot(Ot, o, out_bf16, ((long)b * T + c * C) * vStride + (long)h * V + v0 + col0 + (gq & ~1), vStride, c * C, T, gq, tq);
        lk_state_step<K>(St, Ut, Gl + buf * K, sKDh + buf * C * LK * 2 + kOff, sKDl + buf * C * LK * 2 + kOff, tq);
    }
    if (p == P - 1 && ht) lc_st_store<K>(ht + ((long)b * H + h) * K * V + v0 + col0 + gq, V, St, tq);
}

// The end-state pass of segmented runs (as lc_chunk_end_delta): one block of 4 warps per (64 state columns, value head,
// b * P + p) walks segment p from a zero state. Blocks x < V / 64 own columns 64 x .. of the state and store them as E
// (seg_state [B*P,H,K,V]); blocks x >= V / 64 walk columns 64 (x - V / 64) .. of the identity with u = 0 and store
// them as M (seg_trans [B*P,H,K,K]): per chunk the state map is S -> (diag(2^{G_last}) - (k 2^{G_last - G})^T w) S +
// (k 2^{G_last - G})^T u, so the scan (linea_chunk_seg_scan_delta) joins segments by S_{p+1} = M_p S_p + E_p. The last
// segment's blocks return at once, and so do segment 0's transition blocks without h0. About 140 KB of shared memory
// at K = 128 (tiles double-buffered).
template <int K>
__device__ __forceinline__ void lk_kda_end(
    const lc_bf16* __restrict__ kdh, const lc_bf16* __restrict__ kdl, const lc_bf16* __restrict__ w,
    const float* __restrict__ u, const float* __restrict__ gl, const float* __restrict__ h0, int T, int H, int V,
    int seg_chunks, float* __restrict__ seg_state, float* __restrict__ seg_trans)
{
    constexpr int C = 64, BV = 64, LK = K + 8, LU = BV + 4, KN = K / 8;
    extern __shared__ uint4 lc_smem4[];
    lc_bf16* KDh = (lc_bf16*)lc_smem4;   // [2][C][LK]
    lc_bf16* KDl = KDh + 2 * C * LK;     // [2][C][LK]
    lc_bf16* Ws = KDl + 2 * C * LK;      // [2][C][LK]
    float* Us = (float*)(Ws + 2 * C * LK);  // [2][C][LU] (E blocks)
    float* Gl = Us + 2 * C * LU;         // [2][K]
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const int mat = lane >> 3, r8 = lane & 7;
    const int NC = (T + C - 1) / C, P = (NC + seg_chunks - 1) / seg_chunks;
    const bool trans = (int)blockIdx.x >= V / BV;
    const int v0 = (trans ? blockIdx.x - V / BV : blockIdx.x) * BV, h = blockIdx.y, b = blockIdx.z / P,
              p = blockIdx.z - b * P;
    if (p == P - 1 || (trans && p == 0 && !h0)) return;
    const int cBegin = p * seg_chunks, cEnd = min(NC, cBegin + seg_chunks);
    const long kStride = (long)H * K, vStride = (long)H * V, kBase = (long)b * T * kStride + (long)h * K;
    const float* ub = u + (long)b * T * vStride + (long)h * V + v0;
    const int col0 = 16 * warp;
    const unsigned sKDh = lc_smem_addr(KDh), sKDl = lc_smem_addr(KDl), sW = lc_smem_addr(Ws);
    const unsigned wOff = ((mat >> 1) * 8 * LK + r8 * LK + (mat & 1) * 8) * 2;  // B = w^T (keys x tokens)
    const unsigned kOff = lc_b_off(LK, lane);                                     // B = decayed k (tokens x keys)
    auto load = [&](int c, int buf) {
        lc_load_tile<K, lc_bf16, 128>(KDh + buf * C * LK, kdh + kBase, c * C, T, kStride);
        lc_load_tile<K, lc_bf16, 128>(KDl + buf * C * LK, kdl + kBase, c * C, T, kStride);
        lc_load_tile<K, lc_bf16, 128>(Ws + buf * C * LK, w + kBase, c * C, T, kStride);
        if (!trans) lc_load_tile<BV, float, 128>(Us + buf * C * LU, ub, c * C, T, vStride);
        if (tid < K / 4)
            lc_cp_async16(lc_smem_addr(Gl + buf * K + 4 * tid), gl + (((long)b * NC + c) * H + h) * K + 4 * tid, true);
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
    for (int c = cBegin; c < cEnd; ++c) {
        const int buf = c & 1;
        lc_cp_wait<0>();
        __syncthreads();  // chunk c's tiles are in; every warp is done with chunk c - 1's
        if (c + 1 < cEnd) load(c + 1, buf ^ 1);
        float Ut[8][4];
#pragma unroll
        for (int n = 0; n < 8; ++n) Ut[n][0] = Ut[n][1] = Ut[n][2] = Ut[n][3] = 0.f;
        const unsigned sWt = sW + buf * C * LK * 2;
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
        const float* Ub = Us + buf * C * LU;
#pragma unroll
        for (int n = 0; n < 8; ++n) {
            const int j = 8 * n + 2 * tq;
#pragma unroll
            for (int e = 0; e < 4; ++e)
                Ut[n][e] = (trans ? 0.f : Ub[(j + (e & 1)) * LU + col0 + gq + 8 * (e >> 1)]) - Ut[n][e];
        }
        lk_state_step<K>(St, Ut, Gl + buf * K, sKDh + buf * C * LK * 2 + kOff, sKDl + buf * C * LK * 2 + kOff, tq);
    }
    const int ld = trans ? K : V;  // row stride of what is stored: M [K,K] or E [K,V]
    lc_st_store<K>((trans ? seg_trans : seg_state) + ((long)(b * P + p) * H + h) * K * ld + v0 + col0 + gq, ld, St, tq);
}

// Entries (the declarations start their lines, as CUDATests' entry check reads them). With -DLINEA_SELECT
// -DLINEA_ONLY_<entry>, only that entry is compiled (a first use compiles the three a shape needs, not all ten).
#define LK_PREP(K, VD)                                                                                                \
extern "C" __global__ void __launch_bounds__(128, 2) linea_kda_prep_k##K##_v##VD(                                 \
        const lc_bf16* q, const lc_bf16* k, const lc_bf16* v, const float* g, const float* beta, int T, int H,        \
        int group, float scale, lc_bf16* w, float* u, lc_bf16* qgh, lc_bf16* qgl, lc_bf16* kdh, lc_bf16* kdl,         \
        lc_bf16* aqh, lc_bf16* aql, float* gl) {                                                                      \
        lk_kda_prep<K, VD>(q, k, v, g, beta, T, H, group, scale, w, u, qgh, qgl, kdh, kdl, aqh, aql, gl);             \
    }
#define LK_WALK(K, BV)                                                                                                \
extern "C" __global__ void __launch_bounds__(2 * BV) linea_kda_walk_k##K##_v##BV(                                 \
        const lc_bf16* qgh, const lc_bf16* qgl, const lc_bf16* kdh, const lc_bf16* kdl, const lc_bf16* w,             \
        const float* u, const lc_bf16* aqh, const lc_bf16* aql, const float* gl, const float* h0, float* ht, void* o,  \
        int out_bf16, int T, int H, int V, float scale, int seg_chunks, const float* seg_state) {                    \
        lk_kda_walk<K, BV>(qgh, qgl, kdh, kdl, w, u, aqh, aql, gl, h0, ht, o, out_bf16, T, H, V, scale, seg_chunks,   \
                           seg_state);                                                                                \
    }
#define LK_END(K)                                                                                                     \
extern "C" __global__ void __launch_bounds__(128) linea_kda_end_k##K(                                                 \
        const lc_bf16* kdh, const lc_bf16* kdl, const lc_bf16* w, const float* u, const float* gl, const float* h0,  \
        int T, int H, int V, int seg_chunks, float* seg_state, float* seg_trans) {                                    \
        lk_kda_end<K>(kdh, kdl, w, u, gl, h0, T, H, V, seg_chunks, seg_state, seg_trans);                             \
    }
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_kda_prep_k64_v64)
LK_PREP(64, 64)
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_kda_prep_k64_v128)
LK_PREP(64, 128)
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_kda_prep_k128_v64)
LK_PREP(128, 64)
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_kda_prep_k128_v128)
LK_PREP(128, 128)
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_kda_walk_k64_v64)
LK_WALK(64, 64)
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_kda_walk_k64_v128)
LK_WALK(64, 128)
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_kda_walk_k128_v64)
LK_WALK(128, 64)
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_kda_walk_k128_v128)
LK_WALK(128, 128)
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_kda_end_k64)
LK_END(64)
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_kda_end_k128)
LK_END(128)
#endif
