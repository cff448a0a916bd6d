// CUDA C source of the fused recurrent decode steps. Extracted by scripts/check_kernels.py: keep the markers.

extension CUDAKernels {
    // LINEA-KERNEL-BEGIN recurrent_step
    /// One-token gated delta rule step, state updated in place in one pass.
    /// Entries `linea_gdr_step_{f32,bf16}_k{128,256}_v{1,4}` (largest key dim handled; columns per lane).
    public static let recurrentStep = #"""
// Linea: fused recurrent decode step for gated_delta_rule.
// q, k [BH, K], v [BH, V], g [BH], beta [BH] (fp32 or bf16); state [BH, K, V] fp32 (in place); o [BH, V] fp32.
//   S <- exp(g) S;  u = k^T S;  S <- S + beta k (v - u)^T;  o = (scale q)^T S
// Grid (BH, ceil(V / (32 VEC))), block 256 = 8 warps. Lane = VEC adjacent columns (VEC = 4: float4 loads, needs
// V % 4 == 0); warp w owns rows k = w, w+8, ... Each state element is read once and written once (kept in registers).
#define LINEA_NW 8

__device__ __forceinline__ float linea_load(const float* p, long i) { return p[i]; }
__device__ __forceinline__ float linea_load(const unsigned short* p, long i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
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

template <typename Tin, int KMAX, int VEC>
__device__ __forceinline__ void linea_gdr_step(
    const Tin* __restrict__ q, const Tin* __restrict__ k, const Tin* __restrict__ v,
    const Tin* __restrict__ g, const Tin* __restrict__ beta,
    float* __restrict__ state, float* __restrict__ o, int K, int V, float scale)
{
    constexpr int R = KMAX / LINEA_NW;  // rows per warp
    __shared__ float ks[KMAX], qs[KMAX], red[LINEA_NW][32 * VEC];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long bh = blockIdx.x;
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
        ks[i] = linea_load(k, bh * K + i);
        qs[i] = linea_load(q, bh * K + i) * scale;
    }
    const float decay = expf(linea_load(g, bh));
    const float bt = linea_load(beta, bh);
    __syncthreads();
#pragma unroll
    for (int c = 0; c < VEC; ++c) u[c] = 0.f;
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int r = warp + LINEA_NW * i;
        if (active && r < K) {
#pragma unroll
            for (int c = 0; c < VEC; ++c) { s[i][c] *= decay; u[c] = fmaf(ks[r], s[i][c], u[c]); }
        }
    }
#pragma unroll
    for (int c = 0; c < VEC; ++c) red[warp][lane * VEC + c] = u[c];
    __syncthreads();
    float delta[VEC], out[VEC];
#pragma unroll
    for (int c = 0; c < VEC; ++c) {
        float sum = 0.f;
#pragma unroll
        for (int w = 0; w < LINEA_NW; ++w) sum += red[w][lane * VEC + c];
        delta[c] = active ? bt * (linea_load(v, bh * V + c0 + c) - sum) : 0.f;
        out[c] = 0.f;
    }
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int r = warp + LINEA_NW * i;
        if (active && r < K) {
#pragma unroll
            for (int c = 0; c < VEC; ++c) {
                s[i][c] = fmaf(ks[r], delta[c], s[i][c]);
                out[c] = fmaf(qs[r], s[i][c], out[c]);
            }
            linea_vec<VEC>::store(col + (long)r * V, s[i]);
        }
    }
    __syncthreads();
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

extern "C" __global__ void __launch_bounds__(256, 2) linea_gdr_step_f32_k128_v1(
    const float* q, const float* k, const float* v, const float* g, const float* beta,
    float* state, float* o, int K, int V, float scale) {
    linea_gdr_step<float, 128, 1>(q, k, v, g, beta, state, o, K, V, scale);
}

extern "C" __global__ void __launch_bounds__(256, 2) linea_gdr_step_f32_k128_v4(
    const float* q, const float* k, const float* v, const float* g, const float* beta,
    float* state, float* o, int K, int V, float scale) {
    linea_gdr_step<float, 128, 4>(q, k, v, g, beta, state, o, K, V, scale);
}

extern "C" __global__ void __launch_bounds__(256) linea_gdr_step_f32_k256_v1(
    const float* q, const float* k, const float* v, const float* g, const float* beta,
    float* state, float* o, int K, int V, float scale) {
    linea_gdr_step<float, 256, 1>(q, k, v, g, beta, state, o, K, V, scale);
}

extern "C" __global__ void __launch_bounds__(256) linea_gdr_step_f32_k256_v4(
    const float* q, const float* k, const float* v, const float* g, const float* beta,
    float* state, float* o, int K, int V, float scale) {
    linea_gdr_step<float, 256, 4>(q, k, v, g, beta, state, o, K, V, scale);
}

extern "C" __global__ void __launch_bounds__(256, 2) linea_gdr_step_bf16_k128_v1(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, const unsigned short* g, const unsigned short* beta,
    float* state, float* o, int K, int V, float scale) {
    linea_gdr_step<unsigned short, 128, 1>(q, k, v, g, beta, state, o, K, V, scale);
}

extern "C" __global__ void __launch_bounds__(256, 2) linea_gdr_step_bf16_k128_v4(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, const unsigned short* g, const unsigned short* beta,
    float* state, float* o, int K, int V, float scale) {
    linea_gdr_step<unsigned short, 128, 4>(q, k, v, g, beta, state, o, K, V, scale);
}

extern "C" __global__ void __launch_bounds__(256) linea_gdr_step_bf16_k256_v1(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, const unsigned short* g, const unsigned short* beta,
    float* state, float* o, int K, int V, float scale) {
    linea_gdr_step<unsigned short, 256, 1>(q, k, v, g, beta, state, o, K, V, scale);
}

extern "C" __global__ void __launch_bounds__(256) linea_gdr_step_bf16_k256_v4(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, const unsigned short* g, const unsigned short* beta,
    float* state, float* o, int K, int V, float scale) {
    linea_gdr_step<unsigned short, 256, 4>(q, k, v, g, beta, state, o, K, V, scale);
}
"""#
    // LINEA-KERNEL-END
}
