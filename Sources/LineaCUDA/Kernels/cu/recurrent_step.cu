// Linea: fused recurrent forms, S_t = Diag(a_t) S_{t-1} (I - b k k^T) + b k v^T, o_t = (scale q_t)^T S_t: the decode
// step (one token, linea_rec_step_*) and the whole-sequence scan (T tokens, linea_rec_seq_*: fla's fused_recurrent order).
//   decay: none (linear_attn, delta_rule), gamma_h = 1 - 2^(-5-h) with h = bh % H (retention), exp(g) (simple_gla,
//   gated_delta_rule), exp(g_k) per row (gla, kda);  write: S += k v^T, or the delta rule u = k^T S, S += beta k (v - u)^T.
// Step: q, k [BH / group, K] (row bh / group for state bh: grouped value heads, fla's GVA), v [BH, V], g [BH] (scalar) or
// [BH, K] (vector), beta [BH] (all fp32, bf16 or fp16); state [BH, K, V] fp32 (in place); o [BH, V] fp32.
// Scan: fla's layout, q, k [B, T, H, K], v [B, T, HV, V] (fp32, bf16 or fp16), g [B, T, HV] or [B, T, HV, K] and
// beta [B, T, HV] fp32; initial state [B, HV, K, V] fp32 or null (zeros), final state [B, HV, K, V] fp32; o [B, T, HV, V]
// fp32 or bf16. The state stays in registers for all T tokens (read once, written once).
// Grid (BH, ceil(V / (32 VEC))), block 32 LINEA_NW threads (8 warps by default). Lane = VEC adjacent columns (VEC = 4: float4 loads, needs
// V % 4 == 0); warp w owns rows k = w, w+8, ... Each state element is read once and written once (kept in registers).
// With -DLINEA_SELECT -DLINEA_ONLY_<entry>, only that entry is compiled (first use compiles one, not all).
// linea-nvrtc-variant: gva -DLINEA_GVA=1  (grouped value heads, group > 1)
#include "element_io.cuh"
#ifndef LINEA_NW
#define LINEA_NW 8  // warps per block (-DLINEA_NW=16: 512 threads, half the rows per warp, fewer registers)
#endif
#ifndef LINEA_GVA
#define LINEA_GVA 0  // 1: grouped value heads (group > 1; CUDAKernels.groupedHeadsOptions), else q, k [BH, K]
#endif

template <int VEC> struct linea_vec;
template <> struct linea_vec<1> {
    static __device__ __forceinline__ void load(const float* p, float* x) { x[0] = *p; }
    static __device__ __forceinline__ void store(float* p, const float* x) { *p = x[0]; }
};
template <> struct linea_vec<4> {
    static __device__ __forceinline__ void load(const float* p, float* x) {
        float4 t = *(const float4*)p; x[0] = t.x; x[1] = t.y; x[2] = t.z; x[3] = t.w;
    }
    static __device__ __forceinline__ void store(float* p, const float* x) {
        float4 t; t.x = x[0]; t.y = x[1]; t.z = x[2]; t.w = x[3]; *(float4*)p = t;
    }
};

// Shared staging of one token: k, scale q and exp(g) rows, and the cross-warp reduction buffer.
template <int KMAX, int VEC> struct linea_rec_smem {
    float ks[KMAX], qs[KMAX], gs[KMAX], red[LINEA_NW][32 * VEC];
};

// One token on this lane's state registers s (rows warp + LINEA_NW i, columns c0..c0+VEC-1): q, k at row offset qk of
// q and k, v at offset vo, g at go (a scalar, or K entries for GATE 3), beta at bo. Returns this lane's o columns in
// warp 0 (`out`, summed over the warps). Begins with a barrier, so calls may follow each other on the same staging.
// GATE: 0 none, 1 per head (retention, head h), 2 scalar g, 3 vector g.
template <typename Tin, typename Tg, int KMAX, int VEC, int GATE, bool DELTA>
__device__ __forceinline__ void linea_rec_token(
    float (&s)[KMAX / LINEA_NW][VEC], const Tin* __restrict__ q, const Tin* __restrict__ k, const Tin* __restrict__ v,
    const Tg* __restrict__ g, const Tg* __restrict__ beta, long qk, long vo, long go, long bo, int h, int K, float scale,
    bool active, int c0, linea_rec_smem<KMAX, VEC>& sm, float (&out)[VEC])
{
    constexpr int R = KMAX / LINEA_NW;  // rows per warp
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // the previous token's readers of the staging are done
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
        sm.ks[i] = ld(k, qk + i);
        sm.qs[i] = ld(q, qk + i) * scale;
        if (GATE == 3) sm.gs[i] = expf(ld(g, go + i));
    }
    float decay = 1.f;
    if (GATE == 1) decay = 1.f - exp2f(-5.f - (float)h);
    if (GATE == 2) decay = expf(ld(g, go));
    __syncthreads();
    float delta[VEC];
    if (DELTA) {
        const float bt = ld(beta, bo);
        float u[VEC];
#pragma unroll
        for (int c = 0; c < VEC; ++c) u[c] = 0.f;
#pragma unroll
        for (int i = 0; i < R; ++i) {
            const int r = warp + LINEA_NW * i;
            if (active && r < K) {
                const float a = GATE == 3 ? sm.gs[r] : decay;
#pragma unroll
                for (int c = 0; c < VEC; ++c) { if (GATE != 0) s[i][c] *= a; u[c] = fmaf(sm.ks[r], s[i][c], u[c]); }
            }
        }
#pragma unroll
        for (int c = 0; c < VEC; ++c) sm.red[warp][lane * VEC + c] = u[c];
        __syncthreads();
#pragma unroll
        for (int c = 0; c < VEC; ++c) {
            float sum = 0.f;
#pragma unroll
            for (int w = 0; w < LINEA_NW; ++w) sum += sm.red[w][lane * VEC + c];
            delta[c] = active ? bt * (ld(v, vo + c0 + c) - sum) : 0.f;
        }
        __syncthreads();  // red is reused for the output below
    } else {
#pragma unroll
        for (int c = 0; c < VEC; ++c) delta[c] = active ? ld(v, vo + c0 + c) : 0.f;
    }
    float part[VEC];
#pragma unroll
    for (int c = 0; c < VEC; ++c) part[c] = 0.f;
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int r = warp + LINEA_NW * i;
        if (active && r < K) {
            const float a = GATE == 3 ? sm.gs[r] : decay;
#pragma unroll
            for (int c = 0; c < VEC; ++c) {
                if (!DELTA && GATE != 0) s[i][c] *= a;
                s[i][c] = fmaf(sm.ks[r], delta[c], s[i][c]);
                part[c] = fmaf(sm.qs[r], s[i][c], part[c]);
            }
        }
    }
#pragma unroll
    for (int c = 0; c < VEC; ++c) sm.red[warp][lane * VEC + c] = part[c];
    __syncthreads();
    if (warp == 0) {
#pragma unroll
        for (int c = 0; c < VEC; ++c) {
            float sum = 0.f;
#pragma unroll
            for (int w = 0; w < LINEA_NW; ++w) sum += sm.red[w][lane * VEC + c];
            out[c] = sum;
        }
    }
}

// Loads (load = true) or stores this lane's state registers at `col` (row stride V); a null `col` loads zeros.
template <int KMAX, int VEC>
__device__ __forceinline__ void linea_rec_state(float (&s)[KMAX / LINEA_NW][VEC], float* col, int K, int V, bool active, bool load) {
    const int warp = threadIdx.x >> 5;
#pragma unroll
    for (int i = 0; i < KMAX / LINEA_NW; ++i) {
        const int r = warp + LINEA_NW * i;
        if (load) {
#pragma unroll
            for (int c = 0; c < VEC; ++c) s[i][c] = 0.f;
            if (col && active && r < K) linea_vec<VEC>::load(col + (long)r * V, s[i]);
        } else if (active && r < K) {
            linea_vec<VEC>::store(col + (long)r * V, s[i]);
        }
    }
}

// The decode step of state head bh = blockIdx.x: H is the number of state heads (retention's h = bh % H).
template <typename Tin, int KMAX, int VEC, int GATE, bool DELTA>
__device__ __forceinline__ void linea_rec_step(
    const Tin* q, const Tin* k, const Tin* v, const Tin* g, const Tin* beta, float* state, float* o, int K, int V, int H,
    int group, float scale, linea_rec_smem<KMAX, VEC>& sm)
{
    const int lane = threadIdx.x & 31;
    // The q and k row of this state head: bh / group with -DLINEA_GVA=1, else bh (`group` unused).
    const long bh = blockIdx.x, qk = LINEA_GVA ? (long)((int)blockIdx.x / group) : bh;
    const int c0 = (blockIdx.y * 32 + lane) * VEC;  // first column of this lane
    const bool active = c0 < V;  // VEC = 4 requires V % 4 == 0, so all VEC columns are then in range
    float* col = state + bh * (long)K * V + c0;
    float s[KMAX / LINEA_NW][VEC], out[VEC];
    // The state loads are issued first: their latency then overlaps the k/q staging and the barrier.
    linea_rec_state<KMAX, VEC>(s, col, K, V, active, true);
    linea_rec_token<Tin, Tin, KMAX, VEC, GATE, DELTA>(s, q, k, v, g, beta, qk * K, bh * V, GATE == 3 ? bh * K : bh, bh,
                                                      (int)(bh % H), K, scale, active, c0, sm, out);
    linea_rec_state<KMAX, VEC>(s, col, K, V, active, false);
    if ((threadIdx.x >> 5) == 0 && active) {
#pragma unroll
        for (int c = 0; c < VEC; ++c) o[bh * V + c0 + c] = out[c];
    }
}

// The whole-sequence scan of state head bh = blockIdx.x = b HV + hv over T tokens (o as bf16 when out_bf16).
template <typename Tin, int KMAX, int VEC, int GATE, bool DELTA>
__device__ __forceinline__ void linea_rec_seq(
    const Tin* q, const Tin* k, const Tin* v, const float* g, const float* beta, const float* initial, float* final_state,
    void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale, linea_rec_smem<KMAX, VEC>& sm)
{
    const int lane = threadIdx.x & 31;
    const long bh = blockIdx.x, b = bh / HV;
    const int hv = (int)(bh % HV), H = HV / group;
    const long h = LINEA_GVA ? hv / group : hv;  // the q/k head of value head hv
    const int c0 = (blockIdx.y * 32 + lane) * VEC;
    const bool active = c0 < V;
    float s[KMAX / LINEA_NW][VEC], out[VEC];
    linea_rec_state<KMAX, VEC>(s, initial ? (float*)initial + bh * (long)K * V + c0 : nullptr, K, V, active, true);
    for (int t = 0; t < T; ++t) {
        const long row = b * T + t;  // token t of sequence b
        const long vo = (row * HV + hv) * V;
        linea_rec_token<Tin, float, KMAX, VEC, GATE, DELTA>(s, q, k, v, g, beta, (row * H + h) * K, vo,
                                                            GATE == 3 ? (row * HV + hv) * K : row * HV + hv, row * HV + hv,
                                                            hv, K, scale, active, c0, sm, out);
        if ((threadIdx.x >> 5) == 0 && active) {
#pragma unroll
            for (int c = 0; c < VEC; ++c) {
                if (out_bf16) st((linea_bf16*)o, vo + c0 + c, out[c]); else st((float*)o, vo + c0 + c, out[c]);
            }
        }
    }
    linea_rec_state<KMAX, VEC>(s, final_state + bh * (long)K * V + c0, K, V, active, false);
}

// mech: 0 linear_attn, 1 retention, 2 simple_gla, 3 gla, 4 delta_rule, 5 gated_delta_rule, 6 kda (uniform over the grid).
// F(GATE, DELTA) runs the instance; one set of shared staging serves all seven.
#define LINEA_REC_SWITCH(mech, F) \
    switch (mech) { \
    case 0: F(0, false); break; case 1: F(1, false); break; case 2: F(2, false); break; case 3: F(3, false); break; \
    case 4: F(0, true); break; case 5: F(2, true); break; default: F(3, true); break; }

template <typename Tin, int KMAX, int VEC>
__device__ __forceinline__ void linea_rec_step_dispatch(
    int mech, const Tin* q, const Tin* k, const Tin* v, const Tin* g, const Tin* beta,
    float* state, float* o, int K, int V, int H, int group, float scale)
{
    __shared__ linea_rec_smem<KMAX, VEC> sm;
#define LINEA_STEP(G, D) linea_rec_step<Tin, KMAX, VEC, G, D>(q, k, v, g, beta, state, o, K, V, H, group, scale, sm)
    LINEA_REC_SWITCH(mech, LINEA_STEP)
#undef LINEA_STEP
}

template <typename Tin, int KMAX, int VEC>
__device__ __forceinline__ void linea_rec_seq_dispatch(
    int mech, const Tin* q, const Tin* k, const Tin* v, const float* g, const float* beta, const float* initial,
    float* final_state, void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale)
{
    __shared__ linea_rec_smem<KMAX, VEC> sm;
#define LINEA_SEQ(G, D) linea_rec_seq<Tin, KMAX, VEC, G, D>(q, k, v, g, beta, initial, final_state, o, out_bf16, T, K, V, HV, group, scale, sm)
    LINEA_REC_SWITCH(mech, LINEA_SEQ)
#undef LINEA_SEQ
}

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f32_k128_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_step_f32_k128_v1(int mech, const float* q, const float* k, const float* v, const float* g, const float* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_step_dispatch<float, 128, 1>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f32_k128_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_step_f32_k128_v4(int mech, const float* q, const float* k, const float* v, const float* g, const float* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_step_dispatch<float, 128, 4>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f32_k256_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_step_f32_k256_v1(int mech, const float* q, const float* k, const float* v, const float* g, const float* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_step_dispatch<float, 256, 1>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f32_k256_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_step_f32_k256_v4(int mech, const float* q, const float* k, const float* v, const float* g, const float* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_step_dispatch<float, 256, 4>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_bf16_k128_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_step_bf16_k128_v1(int mech, const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, const linea_bf16* g, const linea_bf16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_step_dispatch<linea_bf16, 128, 1>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_bf16_k128_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_step_bf16_k128_v4(int mech, const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, const linea_bf16* g, const linea_bf16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_step_dispatch<linea_bf16, 128, 4>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_bf16_k256_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_step_bf16_k256_v1(int mech, const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, const linea_bf16* g, const linea_bf16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_step_dispatch<linea_bf16, 256, 1>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_bf16_k256_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_step_bf16_k256_v4(int mech, const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, const linea_bf16* g, const linea_bf16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_step_dispatch<linea_bf16, 256, 4>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f16_k128_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_step_f16_k128_v1(int mech, const linea_f16* q, const linea_f16* k, const linea_f16* v, const linea_f16* g, const linea_f16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_step_dispatch<linea_f16, 128, 1>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f16_k128_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_step_f16_k128_v4(int mech, const linea_f16* q, const linea_f16* k, const linea_f16* v, const linea_f16* g, const linea_f16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_step_dispatch<linea_f16, 128, 4>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f16_k256_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_step_f16_k256_v1(int mech, const linea_f16* q, const linea_f16* k, const linea_f16* v, const linea_f16* g, const linea_f16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_step_dispatch<linea_f16, 256, 1>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f16_k256_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_step_f16_k256_v4(int mech, const linea_f16* q, const linea_f16* k, const linea_f16* v, const linea_f16* g, const linea_f16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_step_dispatch<linea_f16, 256, 4>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_seq_f32_k128_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_seq_f32_k128_v1(int mech, const float* q, const float* k, const float* v, const float* g, const float* beta, const float* initial, float* final_state, void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale) {
    linea_rec_seq_dispatch<float, 128, 1>(mech, q, k, v, g, beta, initial, final_state, o, out_bf16, T, K, V, HV, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_seq_f32_k128_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_seq_f32_k128_v4(int mech, const float* q, const float* k, const float* v, const float* g, const float* beta, const float* initial, float* final_state, void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale) {
    linea_rec_seq_dispatch<float, 128, 4>(mech, q, k, v, g, beta, initial, final_state, o, out_bf16, T, K, V, HV, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_seq_f32_k256_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_seq_f32_k256_v1(int mech, const float* q, const float* k, const float* v, const float* g, const float* beta, const float* initial, float* final_state, void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale) {
    linea_rec_seq_dispatch<float, 256, 1>(mech, q, k, v, g, beta, initial, final_state, o, out_bf16, T, K, V, HV, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_seq_f32_k256_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_seq_f32_k256_v4(int mech, const float* q, const float* k, const float* v, const float* g, const float* beta, const float* initial, float* final_state, void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale) {
    linea_rec_seq_dispatch<float, 256, 4>(mech, q, k, v, g, beta, initial, final_state, o, out_bf16, T, K, V, HV, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_seq_bf16_k128_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_seq_bf16_k128_v1(int mech, const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, const float* g, const float* beta, const float* initial, float* final_state, void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale) {
    linea_rec_seq_dispatch<linea_bf16, 128, 1>(mech, q, k, v, g, beta, initial, final_state, o, out_bf16, T, K, V, HV, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_seq_bf16_k128_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_seq_bf16_k128_v4(int mech, const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, const float* g, const float* beta, const float* initial, float* final_state, void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale) {
    linea_rec_seq_dispatch<linea_bf16, 128, 4>(mech, q, k, v, g, beta, initial, final_state, o, out_bf16, T, K, V, HV, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_seq_bf16_k256_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_seq_bf16_k256_v1(int mech, const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, const float* g, const float* beta, const float* initial, float* final_state, void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale) {
    linea_rec_seq_dispatch<linea_bf16, 256, 1>(mech, q, k, v, g, beta, initial, final_state, o, out_bf16, T, K, V, HV, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_seq_bf16_k256_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_seq_bf16_k256_v4(int mech, const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, const float* g, const float* beta, const float* initial, float* final_state, void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale) {
    linea_rec_seq_dispatch<linea_bf16, 256, 4>(mech, q, k, v, g, beta, initial, final_state, o, out_bf16, T, K, V, HV, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_seq_f16_k128_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_seq_f16_k128_v1(int mech, const linea_f16* q, const linea_f16* k, const linea_f16* v, const float* g, const float* beta, const float* initial, float* final_state, void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale) {
    linea_rec_seq_dispatch<linea_f16, 128, 1>(mech, q, k, v, g, beta, initial, final_state, o, out_bf16, T, K, V, HV, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_seq_f16_k128_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_seq_f16_k128_v4(int mech, const linea_f16* q, const linea_f16* k, const linea_f16* v, const float* g, const float* beta, const float* initial, float* final_state, void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale) {
    linea_rec_seq_dispatch<linea_f16, 128, 4>(mech, q, k, v, g, beta, initial, final_state, o, out_bf16, T, K, V, HV, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_seq_f16_k256_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_seq_f16_k256_v1(int mech, const linea_f16* q, const linea_f16* k, const linea_f16* v, const float* g, const float* beta, const float* initial, float* final_state, void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale) {
    linea_rec_seq_dispatch<linea_f16, 256, 1>(mech, q, k, v, g, beta, initial, final_state, o, out_bf16, T, K, V, HV, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_seq_f16_k256_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_seq_f16_k256_v4(int mech, const linea_f16* q, const linea_f16* k, const linea_f16* v, const float* g, const float* beta, const float* initial, float* final_state, void* o, int out_bf16, int T, int K, int V, int HV, int group, float scale) {
    linea_rec_seq_dispatch<linea_f16, 256, 4>(mech, q, k, v, g, beta, initial, final_state, o, out_bf16, T, K, V, HV, group, scale);
}
#endif
