// Linea: chunked forward of S_t = diag(a_t) S_{t-1} (I - b_t k_t k_t^T) + b_t k_t v_t^T, o_t = scale q_t^T S_t, in fp32.
// q, k [B,T,H/group,K] (value head h reads q/k head h / group, fla's GVA), v [B,T,H,V] f32 or f16; g fp32: none
// (mode 0), per-head log decay [H] (mode 1), per-token log gate
// [B,T,H] (mode 2), per-key log gate [B,T,H,K] (mode 3, gla); beta fp32 [B,T,H] (delta); h0/ht [B,H,K,V] fp32 (either
// may be null); o [B,T,H,V] fp32 or bf16.
//
// One block of 256 threads per (V block of BV columns, head, batch) walks the chunks of C (64 or 32) tokens in order
// with its K x BV slice of the state in shared memory (fp32). Per chunk, with G the inclusive cumulative log gate in
// the chunk (per key channel for gla) and S the state before the chunk:
//   delta only: (I + L) U = diag(beta) (V - diag(e^G) K S), L_ij = beta_i e^{G_i-G_j} k_i.k_j (j < i), solved for U by
//               forward substitution (this is U = u - w S of the WY/UT form, with w = A beta e^G K, u = A beta V,
//               A = (I + L)^{-1}); otherwise U = V
//   o_i = scale (q_i * e^{G_i}) S + sum_{j<=i} scale [sum_d q_id k_jd e^{G_id-G_jd}] U_j
//   S  <- diag(e^{G_last}) S + sum_j (k_j * e^{G_last-G_j}) U_j^T
// Every exponent is a difference G_i - G_j with j <= i (or G_i itself), so <= 0: no factor exceeds 1.
// linea-nvrtc-variant: gva -DLINEA_GVA=1  (grouped value heads, HV > H: chunked_common.cuh)
typedef unsigned short lcs_f16;
#ifndef LINEA_GVA
#define LINEA_GVA 0  // 1: grouped value heads, group > 1 (chunked_common.cuh has the note)
#endif

__device__ __forceinline__ float lcs_load(const float* p, long i) { return p[i]; }
__device__ __forceinline__ float lcs_load(const lcs_f16* p, long i) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i]));
    return f;
}
__device__ __forceinline__ unsigned short lcs_bf16(float x) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}

// acc[m] = sum_d A[i][d] S[d][c] for c = tid % BV and rows i = tid / BV + (256 / BV) m, m < C / (256 / BV);
// A has row stride K + 1, S row stride BV.
template <int K, int BV>
__device__ __forceinline__ void lcs_rows_times_state(const float* A, const float* S, float* acc, int C) {
    constexpr int RG = 256 / BV, MR = 64 / RG;
    const int c = threadIdx.x % BV, r0 = threadIdx.x / BV, nr = C / RG;
#pragma unroll
    for (int m = 0; m < MR; ++m) acc[m] = 0.f;
    for (int d = 0; d < K; ++d) {
        const float s = S[d * BV + c];
#pragma unroll
        for (int m = 0; m < MR; ++m)
            if (m < nr) acc[m] = fmaf(A[(r0 + RG * m) * (K + 1) + d], s, acc[m]);
    }
}

template <typename T, int K, int BV>
__device__ __forceinline__ void lcs_chunk(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const float* __restrict__ g,
    const float* __restrict__ beta, int mode, int delta, const float* __restrict__ h0, float* __restrict__ ht,
    void* __restrict__ o, int out_bf16, int TT, int H, int group, int V, float scale, int C)
{
    constexpr int NT = 256, LK = K + 1, RG = 256 / BV, MR = 64 / RG, MS = K / RG;
    extern __shared__ float lcs_smem[];
    const int LP = C + 1;
    const bool vec = mode == 3;
    float* S = lcs_smem;             // [K][BV] state slice
    float* Qs = S + K * BV;          // [C][LK] q, then scale e^{G_i} q_i
    float* Ks = Qs + C * LK;         // [C][LK] k, then e^{G_last-G_j} k_j
    float* Us = Ks + C * LK;         // [C][BV] v, then U
    float* P = Us + C * BV;          // [C][LP] L (delta), then the causal decayed scores
    float* Bt = P + C * LP;          // [C] beta
    float* G = Bt + C;               // [C][LK] (gla) or [C] cumulative log gates
    const int tid = threadIdx.x, v0 = blockIdx.x * BV, h = blockIdx.y, b = blockIdx.z;
    // gla's g, v, o and the state hold H heads; q, k hold H / group under LINEA_GVA (value head h reads head
    // hk = h / group), else H (then q, k and g share one index).
    const int hk = LINEA_GVA ? h / group : h;
    const long bh = (long)b * H + h, gRow = (long)H * K, kRow = LINEA_GVA ? (long)(H / group) * K : gRow,
               vRow = (long)H * V;
    const int c = tid % BV, r0 = tid / BV;
    auto gate = [&](int i, int d) { return vec ? G[i * LK + d] : G[i]; };

    for (int e = tid; e < K * BV; e += NT) {
        const int d = e / BV, cc = e - d * BV;
        S[e] = h0 ? h0[(bh * K + d) * V + v0 + cc] : 0.f;
    }
    const int NC = (TT + C - 1) / C;
    for (int ch = 0; ch < NC; ++ch) {
        const int t0 = ch * C;
        __syncthreads();  // the previous chunk is done with the tiles
        for (int e = tid; e < C * K; e += NT) {
            const int i = e / K, d = e - i * K, t = t0 + i;
            const bool ok = t < TT;
            const long at = ((long)b * TT + t) * kRow + (long)hk * K + d;
            Qs[i * LK + d] = ok ? lcs_load(q, at) : 0.f;
            Ks[i * LK + d] = ok ? lcs_load(k, at) : 0.f;
            if (vec) G[i * LK + d] = ok ? g[LINEA_GVA ? ((long)b * TT + t) * gRow + (long)h * K + d : at] : 0.f;
        }
        for (int e = tid; e < C * BV; e += NT) {
            const int i = e / BV, cc = e - i * BV, t = t0 + i;
            Us[e] = t < TT ? lcs_load(v, ((long)b * TT + t) * vRow + (long)h * V + v0 + cc) : 0.f;
        }
        for (int i = tid; i < C; i += NT) {
            const int t = t0 + i;
            const bool ok = t < TT;
            if (!vec) G[i] = !ok || mode == 0 ? 0.f : mode == 1 ? g[h] : g[((long)b * TT + t) * H + h];
            Bt[i] = ok && delta ? beta[((long)b * TT + t) * H + h] : 0.f;
        }
        __syncthreads();
        // Inclusive cumulative gates (zero gates past the end keep G flat there).
        if (vec) {
            for (int d = tid; d < K; d += NT) {
                float s = 0.f;
                for (int i = 0; i < C; ++i) { s += G[i * LK + d]; G[i * LK + d] = s; }
            }
        } else if (tid == 0) {
            float s = 0.f;
            for (int i = 0; i < C; ++i) { s += G[i]; G[i] = s; }
        }
        __syncthreads();

        // Scores: rows i = tid / C + (256 / C) m, column j = tid % C.
        const int sj = tid % C, si0 = tid / C, sg = NT / C, sn = C / sg;
        if (delta) {  // scalar gates only
            float acc[MR];
            lcs_rows_times_state<K, BV>(Ks, S, acc, C);
#pragma unroll
            for (int m = 0; m < MR; ++m) {
                if (m >= C / RG) break;
                const int i = r0 + RG * m;
                Us[i * BV + c] = Bt[i] * (Us[i * BV + c] - expf(G[i]) * acc[m]);
            }
            for (int m = 0; m < sn; ++m) {
                const int i = si0 + sg * m;
                float dot = 0.f;
                for (int d = 0; d < K; ++d) dot = fmaf(Ks[i * LK + d], Ks[sj * LK + d], dot);
                P[i * LP + sj] = sj < i ? Bt[i] * expf(G[i] - G[sj]) * dot : 0.f;
            }
            __syncthreads();
            // Forward substitution, one column per thread: U_i -= sum_{j<i} L_ij U_j.
            for (int cc = tid; cc < BV; cc += NT)
                for (int i = 1; i < C; ++i) {
                    float s = Us[i * BV + cc];
                    for (int j = 0; j < i; ++j) s = fmaf(-P[i * LP + j], Us[j * BV + cc], s);
                    Us[i * BV + cc] = s;
                }
            __syncthreads();
        }
        for (int m = 0; m < sn; ++m) {
            const int i = si0 + sg * m;
            float dot = 0.f;
            if (sj <= i) {
                if (vec) {
                    for (int d = 0; d < K; ++d)
                        dot = fmaf(Qs[i * LK + d] * Ks[sj * LK + d], expf(fminf(G[i * LK + d] - G[sj * LK + d], 0.f)), dot);
                } else {
                    for (int d = 0; d < K; ++d) dot = fmaf(Qs[i * LK + d], Ks[sj * LK + d], dot);
                    dot *= expf(G[i] - G[sj]);
                }
            }
            P[i * LP + sj] = scale * dot;
        }
        __syncthreads();
        // Decay q and k in place: q_i <- scale e^{G_i} q_i, k_j <- e^{G_last-G_j} k_j.
        for (int e = tid; e < C * K; e += NT) {
            const int i = e / K, d = e - i * K;
            Qs[i * LK + d] *= scale * expf(gate(i, d));
            Ks[i * LK + d] *= expf(gate(C - 1, d) - gate(i, d));
        }
        __syncthreads();
        {
            float acc[MR];
            lcs_rows_times_state<K, BV>(Qs, S, acc, C);
#pragma unroll
            for (int m = 0; m < MR; ++m) {
                if (m >= C / RG) break;
                const int i = r0 + RG * m, t = t0 + i;
                float s = acc[m];
                for (int j = 0; j <= i; ++j) s = fmaf(P[i * LP + j], Us[j * BV + c], s);
                if (t < TT) {
                    const long at = ((long)b * TT + t) * vRow + (long)h * V + v0 + c;
                    if (out_bf16) ((unsigned short*)o)[at] = lcs_bf16(s);
                    else ((float*)o)[at] = s;
                }
            }
        }
        __syncthreads();
        // State update: S[d][c] <- e^{G_last,d} S[d][c] + sum_j k~_jd U_jc, rows d = tid / BV + RG m.
#pragma unroll
        for (int m = 0; m < MS; ++m) {
            const int d = r0 + RG * m;
            float s = expf(gate(C - 1, d)) * S[d * BV + c];
            for (int j = 0; j < C; ++j) s = fmaf(Ks[j * LK + d], Us[j * BV + c], s);
            S[d * BV + c] = s;
        }
    }
    __syncthreads();
    if (ht)
        for (int e = tid; e < K * BV; e += NT) {
            const int d = e / BV, cc = e - d * BV;
            ht[(bh * K + d) * V + v0 + cc] = S[e];
        }
}

// Entries. With -DLINEA_SELECT -DLINEA_ONLY_<entry>, only that entry is compiled (first use compiles one, not all eight).
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_chunk_simt_f32_k64_v32)
extern "C" __global__ void __launch_bounds__(256) linea_chunk_simt_f32_k64_v32(
    const float* q, const float* k, const float* v, const float* g, const float* beta, int mode, int delta,
    const float* h0, float* ht, void* o, int out_bf16, int T, int H, int group, int V, float scale, int C) {
    lcs_chunk<float, 64, 32>(q, k, v, g, beta, mode, delta, h0, ht, o, out_bf16, T, H, group, V, scale, C);
}
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_chunk_simt_f32_k64_v64)
extern "C" __global__ void __launch_bounds__(256) linea_chunk_simt_f32_k64_v64(
    const float* q, const float* k, const float* v, const float* g, const float* beta, int mode, int delta,
    const float* h0, float* ht, void* o, int out_bf16, int T, int H, int group, int V, float scale, int C) {
    lcs_chunk<float, 64, 64>(q, k, v, g, beta, mode, delta, h0, ht, o, out_bf16, T, H, group, V, scale, C);
}
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_chunk_simt_f32_k128_v32)
extern "C" __global__ void __launch_bounds__(256) linea_chunk_simt_f32_k128_v32(
    const float* q, const float* k, const float* v, const float* g, const float* beta, int mode, int delta,
    const float* h0, float* ht, void* o, int out_bf16, int T, int H, int group, int V, float scale, int C) {
    lcs_chunk<float, 128, 32>(q, k, v, g, beta, mode, delta, h0, ht, o, out_bf16, T, H, group, V, scale, C);
}
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_chunk_simt_f32_k128_v64)
extern "C" __global__ void __launch_bounds__(256) linea_chunk_simt_f32_k128_v64(
    const float* q, const float* k, const float* v, const float* g, const float* beta, int mode, int delta,
    const float* h0, float* ht, void* o, int out_bf16, int T, int H, int group, int V, float scale, int C) {
    lcs_chunk<float, 128, 64>(q, k, v, g, beta, mode, delta, h0, ht, o, out_bf16, T, H, group, V, scale, C);
}
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_chunk_simt_f16_k64_v32)
extern "C" __global__ void __launch_bounds__(256) linea_chunk_simt_f16_k64_v32(
    const lcs_f16* q, const lcs_f16* k, const lcs_f16* v, const float* g, const float* beta, int mode, int delta,
    const float* h0, float* ht, void* o, int out_bf16, int T, int H, int group, int V, float scale, int C) {
    lcs_chunk<lcs_f16, 64, 32>(q, k, v, g, beta, mode, delta, h0, ht, o, out_bf16, T, H, group, V, scale, C);
}
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_chunk_simt_f16_k64_v64)
extern "C" __global__ void __launch_bounds__(256) linea_chunk_simt_f16_k64_v64(
    const lcs_f16* q, const lcs_f16* k, const lcs_f16* v, const float* g, const float* beta, int mode, int delta,
    const float* h0, float* ht, void* o, int out_bf16, int T, int H, int group, int V, float scale, int C) {
    lcs_chunk<lcs_f16, 64, 64>(q, k, v, g, beta, mode, delta, h0, ht, o, out_bf16, T, H, group, V, scale, C);
}
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_chunk_simt_f16_k128_v32)
extern "C" __global__ void __launch_bounds__(256) linea_chunk_simt_f16_k128_v32(
    const lcs_f16* q, const lcs_f16* k, const lcs_f16* v, const float* g, const float* beta, int mode, int delta,
    const float* h0, float* ht, void* o, int out_bf16, int T, int H, int group, int V, float scale, int C) {
    lcs_chunk<lcs_f16, 128, 32>(q, k, v, g, beta, mode, delta, h0, ht, o, out_bf16, T, H, group, V, scale, C);
}
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_chunk_simt_f16_k128_v64)
extern "C" __global__ void __launch_bounds__(256) linea_chunk_simt_f16_k128_v64(
    const lcs_f16* q, const lcs_f16* k, const lcs_f16* v, const float* g, const float* beta, int mode, int delta,
    const float* h0, float* ht, void* o, int out_bf16, int T, int H, int group, int V, float scale, int C) {
    lcs_chunk<lcs_f16, 128, 64>(q, k, v, g, beta, mode, delta, h0, ht, o, out_bf16, T, H, group, V, scale, C);
}
#endif
