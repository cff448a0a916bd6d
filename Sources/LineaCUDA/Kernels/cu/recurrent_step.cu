// Linea: fused recurrent decode step, S_t = Diag(a_t) S_{t-1} (I - b k k^T) + b k v^T, o = (scale q)^T S_t.
// q, k [BH / group, K] (row bh / group for state bh: grouped value heads, fla's GVA), v [BH, V], g [BH] (scalar) or
// [BH, K] (vector), beta [BH] (inputs fp32, bf16 or fp16); state [BH, K, V] fp32 (in place); o [BH, V] fp32.
//   decay: none (linear_attn, delta_rule), gamma_h = 1 - 2^(-5-h) with h = bh % H (retention), exp(g) (simple_gla,
//   gated_delta_rule), exp(g_k) per row (gla, kda);  write: S += k v^T, or the delta rule u = k^T S, S += beta k (v - u)^T.
// Grid (BH, ceil(V / (32 VEC))), block 32 LINEA_NW threads (8 warps by default). Lane = VEC adjacent columns (VEC = 4: float4 loads, needs
// V % 4 == 0); warp w owns rows k = w, w+8, ... Each state element is read once and written once (kept in registers).
// With -DLINEA_SELECT -DLINEA_ONLY_<entry>, only that entry is compiled (first use compiles one, not all).
// linea-nvrtc-variant: gva -DLINEA_GVA=1  (grouped value heads, group > 1)
#ifndef LINEA_NW
#define LINEA_NW 8  // warps per block (-DLINEA_NW=16: 512 threads, half the rows per warp, fewer registers)
#endif
#ifndef LINEA_GVA
#define LINEA_GVA 0  // 1: grouped value heads (group > 1; CUDAKernels.groupedHeadsOptions), else q, k [BH, K]
#endif

struct linea_bf16 { unsigned short x; };
struct linea_f16 { unsigned short x; };
__device__ __forceinline__ float linea_load(const float* p, long i) { return p[i]; }
__device__ __forceinline__ float linea_load(const linea_bf16* p, long i) {
    return __uint_as_float(((unsigned int)p[i].x) << 16);
}
__device__ __forceinline__ float linea_load(const linea_f16* p, long i) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i].x)); return f;
}

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

// GATE: 0 none, 1 per head (retention), 2 scalar g, 3 vector g.
template <typename Tin, int KMAX, int VEC, int GATE, bool DELTA>
__device__ __forceinline__ void linea_rec_step(
    const Tin* __restrict__ q, const Tin* __restrict__ k, const Tin* __restrict__ v,
    const Tin* __restrict__ g, const Tin* __restrict__ beta,
    float* __restrict__ state, float* __restrict__ o, int K, int V, int H, int group, float scale,
    float* ks, float* qs, float* gs, float (*red)[32 * VEC])
{
    constexpr int R = KMAX / LINEA_NW;  // rows per warp
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    // The q and k row of this state head: bh / group with -DLINEA_GVA=1, else bh (`group` unused).
    const long bh = blockIdx.x, qk = LINEA_GVA ? (long)((int)blockIdx.x / group) : bh;
    const int c0 = (blockIdx.y * 32 + lane) * VEC;  // first column of this lane
    const bool active = c0 < V;  // VEC = 4 requires V % 4 == 0, so all VEC columns are then in range
    float* col = state + bh * (long)K * V + c0;
    float s[R][VEC], u[VEC];
    // Issue the state loads first: their latency then overlaps the k/q staging and the barrier.
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int r = warp + LINEA_NW * i;
        if (active && r < K) linea_vec<VEC>::load(col + (long)r * V, s[i]);
    }
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
        ks[i] = linea_load(k, qk * K + i);
        qs[i] = linea_load(q, qk * K + i) * scale;
        if (GATE == 3) gs[i] = expf(linea_load(g, bh * K + i));
    }
    float decay = 1.f;
    if (GATE == 1) decay = 1.f - exp2f(-5.f - (float)(bh % H));
    if (GATE == 2) decay = expf(linea_load(g, bh));
    __syncthreads();
    float delta[VEC], out[VEC];
    if (DELTA) {
        const float bt = linea_load(beta, bh);
#pragma unroll
        for (int c = 0; c < VEC; ++c) u[c] = 0.f;
#pragma unroll
        for (int i = 0; i < R; ++i) {
            const int r = warp + LINEA_NW * i;
            if (active && r < K) {
                const float a = GATE == 3 ? gs[r] : decay;
#pragma unroll
                for (int c = 0; c < VEC; ++c) { if (GATE != 0) s[i][c] *= a; u[c] = fmaf(ks[r], s[i][c], u[c]); }
            }
        }
#pragma unroll
        for (int c = 0; c < VEC; ++c) red[warp][lane * VEC + c] = u[c];
        __syncthreads();
#pragma unroll
        for (int c = 0; c < VEC; ++c) {
            float sum = 0.f;
#pragma unroll
            for (int w = 0; w < LINEA_NW; ++w) sum += red[w][lane * VEC + c];
            delta[c] = active ? bt * (linea_load(v, bh * V + c0 + c) - sum) : 0.f;
        }
        __syncthreads();  // red is reused for the output below
    } else {
#pragma unroll
        for (int c = 0; c < VEC; ++c) delta[c] = active ? linea_load(v, bh * V + c0 + c) : 0.f;
    }
#pragma unroll
    for (int c = 0; c < VEC; ++c) out[c] = 0.f;
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int r = warp + LINEA_NW * i;
        if (active && r < K) {
            const float a = GATE == 3 ? gs[r] : decay;
#pragma unroll
            for (int c = 0; c < VEC; ++c) {
                if (!DELTA && GATE != 0) s[i][c] *= a;
                s[i][c] = fmaf(ks[r], delta[c], s[i][c]);
                out[c] = fmaf(qs[r], s[i][c], out[c]);
            }
            linea_vec<VEC>::store(col + (long)r * V, s[i]);
        }
    }
#pragma unroll
    for (int c = 0; c < VEC; ++c) red[warp][lane * VEC + c] = out[c];
    __syncthreads();
    if (warp == 0 && active) {
#pragma unroll
        for (int c = 0; c < VEC; ++c) {
            float sum = 0.f;
#pragma unroll
            for (int w = 0; w < LINEA_NW; ++w) sum += red[w][lane * VEC + c];
            o[bh * V + c0 + c] = sum;
        }
    }
}

// mech: 0 linear_attn, 1 retention, 2 simple_gla, 3 gla, 4 delta_rule, 5 gated_delta_rule, 6 kda (uniform over the grid).
template <typename Tin, int KMAX, int VEC>
__device__ __forceinline__ void linea_rec_dispatch(
    int mech, const Tin* q, const Tin* k, const Tin* v, const Tin* g, const Tin* beta,
    float* state, float* o, int K, int V, int H, int group, float scale)
{
    // One set of shared arrays for the six instances (declared in each, they would each take their own).
    __shared__ float ks[KMAX], qs[KMAX], gs[KMAX], red[LINEA_NW][32 * VEC];
    switch (mech) {
    case 0: linea_rec_step<Tin, KMAX, VEC, 0, false>(q, k, v, g, beta, state, o, K, V, H, group, scale, ks, qs, gs, red); break;
    case 1: linea_rec_step<Tin, KMAX, VEC, 1, false>(q, k, v, g, beta, state, o, K, V, H, group, scale, ks, qs, gs, red); break;
    case 2: linea_rec_step<Tin, KMAX, VEC, 2, false>(q, k, v, g, beta, state, o, K, V, H, group, scale, ks, qs, gs, red); break;
    case 3: linea_rec_step<Tin, KMAX, VEC, 3, false>(q, k, v, g, beta, state, o, K, V, H, group, scale, ks, qs, gs, red); break;
    case 4: linea_rec_step<Tin, KMAX, VEC, 0, true>(q, k, v, g, beta, state, o, K, V, H, group, scale, ks, qs, gs, red); break;
    case 5: linea_rec_step<Tin, KMAX, VEC, 2, true>(q, k, v, g, beta, state, o, K, V, H, group, scale, ks, qs, gs, red); break;
    default: linea_rec_step<Tin, KMAX, VEC, 3, true>(q, k, v, g, beta, state, o, K, V, H, group, scale, ks, qs, gs, red); break;
    }
}

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f32_k128_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_step_f32_k128_v1(int mech, const float* q, const float* k, const float* v, const float* g, const float* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_dispatch<float, 128, 1>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f32_k128_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_step_f32_k128_v4(int mech, const float* q, const float* k, const float* v, const float* g, const float* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_dispatch<float, 128, 4>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f32_k256_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_step_f32_k256_v1(int mech, const float* q, const float* k, const float* v, const float* g, const float* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_dispatch<float, 256, 1>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f32_k256_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_step_f32_k256_v4(int mech, const float* q, const float* k, const float* v, const float* g, const float* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_dispatch<float, 256, 4>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_bf16_k128_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_step_bf16_k128_v1(int mech, const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, const linea_bf16* g, const linea_bf16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_dispatch<linea_bf16, 128, 1>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_bf16_k128_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_step_bf16_k128_v4(int mech, const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, const linea_bf16* g, const linea_bf16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_dispatch<linea_bf16, 128, 4>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_bf16_k256_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_step_bf16_k256_v1(int mech, const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, const linea_bf16* g, const linea_bf16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_dispatch<linea_bf16, 256, 1>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_bf16_k256_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_step_bf16_k256_v4(int mech, const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, const linea_bf16* g, const linea_bf16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_dispatch<linea_bf16, 256, 4>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f16_k128_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_step_f16_k128_v1(int mech, const linea_f16* q, const linea_f16* k, const linea_f16* v, const linea_f16* g, const linea_f16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_dispatch<linea_f16, 128, 1>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f16_k128_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW, 2) linea_rec_step_f16_k128_v4(int mech, const linea_f16* q, const linea_f16* k, const linea_f16* v, const linea_f16* g, const linea_f16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_dispatch<linea_f16, 128, 4>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f16_k256_v1)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_step_f16_k256_v1(int mech, const linea_f16* q, const linea_f16* k, const linea_f16* v, const linea_f16* g, const linea_f16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_dispatch<linea_f16, 256, 1>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_rec_step_f16_k256_v4)
extern "C" __global__ void __launch_bounds__(32 * LINEA_NW) linea_rec_step_f16_k256_v4(int mech, const linea_f16* q, const linea_f16* k, const linea_f16* v, const linea_f16* g, const linea_f16* beta, float* state, float* o, int K, int V, int H, int group, float scale) {
    linea_rec_dispatch<linea_f16, 256, 4>(mech, q, k, v, g, beta, state, o, K, V, H, group, scale);
}
#endif
