// CUDA C source of the fused recurrent decode steps. Extracted by scripts/check_kernels.py: keep the markers.

extension CUDAKernels {
    // LINEA-KERNEL-BEGIN recurrent_step
    /// One-token gated delta rule step, state updated in place in one pass.
    /// Entries `linea_gdr_step_{f32,bf16}_k{128,256}` (the suffix is the largest key dim handled).
    public static let recurrentStep = #"""
// Linea: fused recurrent decode step for gated_delta_rule.
// q, k [BH, K], v [BH, V], g [BH], beta [BH] (fp32 or bf16); state [BH, K, V] fp32 (in place); o [BH, V] fp32.
//   S <- exp(g) S;  u = k^T S;  S <- S + beta k (v - u)^T;  o = (scale q)^T S
// Grid (BH, ceil(V/32)), block 128 = 4 warps. Lane = one column of a 32-column slice; warp w owns rows
// k = w, w+4, ... Each state element is read once and written once (column kept in registers).
#define LINEA_NW 4

__device__ __forceinline__ float linea_load(const float* p, long i) { return p[i]; }
__device__ __forceinline__ float linea_load(const unsigned short* p, long i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
}

template <typename Tin, int KMAX>
__device__ __forceinline__ void linea_gdr_step(
    const Tin* __restrict__ q, const Tin* __restrict__ k, const Tin* __restrict__ v,
    const Tin* __restrict__ g, const Tin* __restrict__ beta,
    float* __restrict__ state, float* __restrict__ o, int K, int V, float scale)
{
    __shared__ float ks[KMAX], qs[KMAX], red[LINEA_NW][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long bh = blockIdx.x;
    const int c = blockIdx.y * 32 + lane;
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
        ks[i] = linea_load(k, bh * K + i);
        qs[i] = linea_load(q, bh * K + i) * scale;
    }
    __syncthreads();
    const float decay = expf(linea_load(g, bh));
    const float bt = linea_load(beta, bh);
    const bool active = c < V;
    float* col = state + bh * (long)K * V + c;
    float s[KMAX / LINEA_NW];
    float u = 0.f;
#pragma unroll
    for (int i = 0; i < KMAX / LINEA_NW; ++i) {
        const int r = warp + LINEA_NW * i;
        s[i] = 0.f;
        if (active && r < K) {
            s[i] = col[(long)r * V] * decay;
            u = fmaf(ks[r], s[i], u);
        }
    }
    red[warp][lane] = u;
    __syncthreads();
    u = 0.f;
#pragma unroll
    for (int w = 0; w < LINEA_NW; ++w) u += red[w][lane];
    const float delta = active ? bt * (linea_load(v, bh * V + c) - u) : 0.f;
    float out = 0.f;
#pragma unroll
    for (int i = 0; i < KMAX / LINEA_NW; ++i) {
        const int r = warp + LINEA_NW * i;
        if (active && r < K) {
            const float x = fmaf(ks[r], delta, s[i]);
            col[(long)r * V] = x;
            out = fmaf(qs[r], x, out);
        }
    }
    __syncthreads();
    red[warp][lane] = out;
    __syncthreads();
    if (warp == 0 && active) {
        float sum = 0.f;
#pragma unroll
        for (int w = 0; w < LINEA_NW; ++w) sum += red[w][lane];
        o[bh * V + c] = sum;
    }
}

extern "C" __global__ void __launch_bounds__(128) linea_gdr_step_f32_k128(
    const float* q, const float* k, const float* v, const float* g, const float* beta,
    float* state, float* o, int K, int V, float scale) {
    linea_gdr_step<float, 128>(q, k, v, g, beta, state, o, K, V, scale);
}

extern "C" __global__ void __launch_bounds__(128) linea_gdr_step_f32_k256(
    const float* q, const float* k, const float* v, const float* g, const float* beta,
    float* state, float* o, int K, int V, float scale) {
    linea_gdr_step<float, 256>(q, k, v, g, beta, state, o, K, V, scale);
}

extern "C" __global__ void __launch_bounds__(128) linea_gdr_step_bf16_k128(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, const unsigned short* g,
    const unsigned short* beta, float* state, float* o, int K, int V, float scale) {
    linea_gdr_step<unsigned short, 128>(q, k, v, g, beta, state, o, K, V, scale);
}

extern "C" __global__ void __launch_bounds__(128) linea_gdr_step_bf16_k256(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, const unsigned short* g,
    const unsigned short* beta, float* state, float* o, int K, int V, float scale) {
    linea_gdr_step<unsigned short, 256>(q, k, v, g, beta, state, o, K, V, scale);
}
"""#
    // LINEA-KERNEL-END
}
