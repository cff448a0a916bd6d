// Linea: flash attention forward, portable version.
// q [B,T,Hq,D], k/v [B,S,Hkv,D] (fp32, bf16 or fp16; the first S of kvRows rows per sequence), o [B,T,Hq,D] (fp32, bf16 or fp16: out_mode 0/1/2), lse [B,T,Hq] fp32.
// Query i sits at absolute position pos = i + S - T (bottom-right aligned) and sees key j when
// (!causal || j <= pos) && (window <= 0 || j > pos - window). A row that sees nothing gets o = 0, lse = -inf.
// Block: 256 threads = 8 warps, 64 queries (8 per warp), key tiles of 32 (one key per lane).
// Dynamic shared memory: Qs[64][D] + Ks[32][D+1] + Vs[32][D] floats.
// With -DLINEA_SELECT -DLINEA_ONLY_<entry>, only that entry is compiled (first use compiles one, not all nine).
#define LINEA_BM 64
#define LINEA_BN 32
#define LINEA_NEG_INF (__int_as_float(0xff800000))

__device__ __forceinline__ float linea_load(const float* p, long i) { return p[i]; }
__device__ __forceinline__ float linea_load(const unsigned short* p, long i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
}
// IEEE half inputs are passed as this wrapper type so that overloads tell them from bf16 bits.
struct linea_f16 { unsigned short bits; };
__device__ __forceinline__ float linea_load(const linea_f16* p, long i) {
    float y;
    asm("cvt.f32.f16 %0, %1;" : "=f"(y) : "h"(p[i].bits));
    return y;
}
__device__ __forceinline__ unsigned short linea_to_f16(float x) {
    unsigned short y;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ unsigned short linea_to_bf16(float x) {
    unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

template <typename Tin, int NC>
__device__ __forceinline__ void linea_attn_simple(
    const Tin* __restrict__ q, const Tin* __restrict__ k, const Tin* __restrict__ v,
    void* __restrict__ o, float* __restrict__ lse,
    int T, int S, int Hq, int Hkv, int D, float scale_log2, int causal, int window, int out_mode, int kvRows)
{
    extern __shared__ float linea_smem[];
    float* Qs = linea_smem;
    float* Ks = Qs + LINEA_BM * D;
    float* Vs = Ks + LINEA_BN * (D + 1);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int m0 = blockIdx.x * LINEA_BM, h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (Hq / Hkv);
    const long qRow = (long)Hq * D, kRow = (long)Hkv * D;
    const Tin* qb = q + ((long)b * T) * qRow + (long)h * D;
    const Tin* kb = k + ((long)b * kvRows) * kRow + (long)hk * D;
    const Tin* vb = v + ((long)b * kvRows) * kRow + (long)hk * D;

    for (int idx = tid; idx < LINEA_BM * D; idx += blockDim.x) {
        int r = idx / D, d = idx - r * D;
        Qs[idx] = (m0 + r < T) ? linea_load(qb, (long)(m0 + r) * qRow + d) : 0.f;
    }
    // Keys any query of this block can see.
    const int shift = S - T;
    int lastRow = min(m0 + LINEA_BM, T) - 1;
    int nBegin = 0, nEnd = S;
    if (causal) nEnd = max(0, min(S, lastRow + shift + 1));
    if (window > 0) nBegin = max(0, m0 + shift - window + 1);

    float m[8], l[8], acc[8][NC];
#pragma unroll
    for (int r = 0; r < 8; ++r) {
        m[r] = LINEA_NEG_INF; l[r] = 0.f;
#pragma unroll
        for (int c = 0; c < NC; ++c) acc[r][c] = 0.f;
    }
    for (int n0 = nBegin; n0 < nEnd; n0 += LINEA_BN) {
        __syncthreads();
        for (int idx = tid; idx < LINEA_BN * D; idx += blockDim.x) {
            int r = idx / D, d = idx - r * D;
            bool in = n0 + r < S;
            Ks[r * (D + 1) + d] = in ? linea_load(kb, (long)(n0 + r) * kRow + d) : 0.f;
            Vs[r * D + d] = in ? linea_load(vb, (long)(n0 + r) * kRow + d) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < 8; ++r) {
            const int row = warp * 8 + r, i = m0 + row;
            if (i >= T) continue;
            const int pos = i + shift, j = n0 + lane;
            const float* qr = Qs + row * D;
            const float* kr = Ks + lane * (D + 1);
            float s = 0.f;
            for (int d = 0; d < D; ++d) s = fmaf(qr[d], kr[d], s);
            s *= scale_log2;
            bool visible = j < S && (!causal || j <= pos) && (window <= 0 || j > pos - window);
            if (!visible) s = LINEA_NEG_INF;
            float mt = s;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, off));
            const float mNew = fmaxf(m[r], mt);
            if (mNew == LINEA_NEG_INF) continue;  // nothing visible yet (warp-uniform)
            const float alpha = exp2f(m[r] - mNew);
            const float p = exp2f(s - mNew);
            float ps = p;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
            l[r] = l[r] * alpha + ps;
            m[r] = mNew;
#pragma unroll
            for (int c = 0; c < NC; ++c) acc[r][c] *= alpha;
            for (int jj = 0; jj < LINEA_BN; ++jj) {
                const float pj = __shfl_sync(0xffffffffu, p, jj);
                const float* vr = Vs + jj * D;
#pragma unroll
                for (int c = 0; c < NC; ++c) {
                    int d = lane + 32 * c;
                    if (d < D) acc[r][c] = fmaf(pj, vr[d], acc[r][c]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 8; ++r) {
        const int i = m0 + warp * 8 + r;
        if (i >= T) continue;
        const long base = (((long)b * T + i) * Hq + h) * D;
        const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            int d = lane + 32 * c;
            if (d < D) {
                float val = acc[r][c] * inv;
                if (out_mode == 1) ((unsigned short*)o)[base + d] = linea_to_bf16(val);
                else if (out_mode == 2) ((unsigned short*)o)[base + d] = linea_to_f16(val);
                else ((float*)o)[base + d] = val;
            }
        }
        if (lane == 0 && lse != 0)
            lse[((long)b * T + i) * Hq + h] = l[r] > 0.f ? (m[r] + log2f(l[r])) * 0.69314718055994531f : LINEA_NEG_INF;
    }
}

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_simple_f32_d64)
extern "C" __global__ void __launch_bounds__(256) linea_attn_simple_f32_d64(
    const float* q, const float* k, const float* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, int D, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_simple<float, 2>(q, k, v, o, lse, T, S, Hq, Hkv, D, scale_log2, causal, window, out_mode, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_simple_f32_d128)
extern "C" __global__ void __launch_bounds__(256) linea_attn_simple_f32_d128(
    const float* q, const float* k, const float* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, int D, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_simple<float, 4>(q, k, v, o, lse, T, S, Hq, Hkv, D, scale_log2, causal, window, out_mode, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_simple_f32_d256)
extern "C" __global__ void __launch_bounds__(256) linea_attn_simple_f32_d256(
    const float* q, const float* k, const float* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, int D, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_simple<float, 8>(q, k, v, o, lse, T, S, Hq, Hkv, D, scale_log2, causal, window, out_mode, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_simple_bf16_d64)
extern "C" __global__ void __launch_bounds__(256) linea_attn_simple_bf16_d64(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, int D, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_simple<unsigned short, 2>(q, k, v, o, lse, T, S, Hq, Hkv, D, scale_log2, causal, window, out_mode, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_simple_bf16_d128)
extern "C" __global__ void __launch_bounds__(256) linea_attn_simple_bf16_d128(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, int D, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_simple<unsigned short, 4>(q, k, v, o, lse, T, S, Hq, Hkv, D, scale_log2, causal, window, out_mode, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_simple_bf16_d256)
extern "C" __global__ void __launch_bounds__(256) linea_attn_simple_bf16_d256(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, int D, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_simple<unsigned short, 8>(q, k, v, o, lse, T, S, Hq, Hkv, D, scale_log2, causal, window, out_mode, kvRows);
}
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_simple_f16_d64)
extern "C" __global__ void __launch_bounds__(256) linea_attn_simple_f16_d64(
    const linea_f16* q, const linea_f16* k, const linea_f16* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, int D, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_simple<linea_f16, 2>(q, k, v, o, lse, T, S, Hq, Hkv, D, scale_log2, causal, window, out_mode, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_simple_f16_d128)
extern "C" __global__ void __launch_bounds__(256) linea_attn_simple_f16_d128(
    const linea_f16* q, const linea_f16* k, const linea_f16* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, int D, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_simple<linea_f16, 4>(q, k, v, o, lse, T, S, Hq, Hkv, D, scale_log2, causal, window, out_mode, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_simple_f16_d256)
extern "C" __global__ void __launch_bounds__(256) linea_attn_simple_f16_d256(
    const linea_f16* q, const linea_f16* k, const linea_f16* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, int D, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_simple<linea_f16, 8>(q, k, v, o, lse, T, S, Hq, Hkv, D, scale_log2, causal, window, out_mode, kvRows);
}
#endif
