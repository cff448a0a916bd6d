// Linea: the delta rules' full walk.
// linea-nvrtc-variant: gva -DLINEA_GVA=1  (grouped value heads, HV > H: chunked_common.cuh)
#include "chunked_delta.cuh"

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
    int T, int H, int group, int V, float scale, int seg_chunks, const float* __restrict__ seg_state)
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
    // w, u and o hold H heads; q, k hold H / group under LINEA_GVA (value head h reads head hk = h / group), else H.
    const int hk = LINEA_GVA ? h / group : h;
    const long wStride = (long)H * K, kStride = LINEA_GVA ? (long)(H / group) * K : wStride, vStride = (long)H * V;
    const lc_bf16* qb = q + (long)b * T * kStride + (long)hk * K;
    const lc_bf16* kb = k + (long)b * T * kStride + (long)hk * K;
    const lc_bf16* wb = w + (long)b * T * wStride + (long)h * K;
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
        lc_load_tile<K, lc_bf16, 128>(Ws, wb, c * C, T, wStride);
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
        // The chunk's outputs, columns v0 + col0 + the warp's 16.
        lc_store_ot(Ot, o, out_bf16, ((long)b * T + c * C) * vStride + (long)h * V + v0 + col0 + (gq & ~1), vStride, c * C, T, gq, tq);
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
        const float *h0, float *ht, void *o, int out_bf16, int T, int H, int group, int V, float scale,               \
        int seg_chunks, const float *seg_state
#define lc_chunk_fwd_delta_CALL q, k, u, w, g, gate_mode, h0, ht, o, out_bf16, T, H, group, V, scale, seg_chunks, seg_state

LC_DELTA_ENTRY(linea_chunk_fwd_k64_delta, lc_chunk_fwd_delta, 64, false)
LC_DELTA_ENTRY(linea_chunk_fwd_k64_gdelta, lc_chunk_fwd_delta, 64, true)
LC_DELTA_ENTRY(linea_chunk_fwd_k128_delta, lc_chunk_fwd_delta, 128, false)
LC_DELTA_ENTRY(linea_chunk_fwd_k128_gdelta, lc_chunk_fwd_delta, 128, true)
