// Linea: block-sparse attention forward (CUDA cores, fp32 math).
// q [B,T,Hq,D], k/v [B,S,Hkv,D] (fp32, bf16 or fp16 by in_kind 0/1/2); mask uint8 [Bm, Hm, QB, KB] (QB = ceil(T/bm), KB = ceil(S/bn);
// strides maskB, maskH are 0 for a broadcast dimension): query i sees key j when mask[i/bm][j/bn] != 0 and (causal)
// j <= i + S - T. o [B,T,Hq,D] (fp32, bf16 or fp16 by out_kind 0/1/2), lse [B,T,Hq] fp32 natural log (-inf, o = 0 for
// rows that see nothing). Block 256 threads = 8 warps, 64 queries (8 per warp), key tiles of 32 (one key per lane);
// a tile is loaded only when some (query, key) pair of the block's 64 x 32 tile is kept.
// Dynamic shared memory: Qs[64][D] + Ks[32][D+1] + Vs[32][D] floats.
#define LINEA_BM 64
#define LINEA_BN 32
// With -DLINEA_SELECT -DLINEA_ONLY_<entry>, only that entry is compiled (first use compiles one, not all).
#define LINEA_NEG_INF (__int_as_float(0xff800000))

// Element i of an fp32 (kind 0), bf16 (1) or fp16 (2) array, as fp32.
__device__ __forceinline__ float linea_load(const void* p, long i, int kind) {
    if (kind == 0) return ((const float*)p)[i];
    const unsigned short h = ((const unsigned short*)p)[i];
    if (kind == 1) return __uint_as_float(((unsigned int)h) << 16);
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short linea_f2bf(float x) {
    unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
__device__ __forceinline__ unsigned short linea_f2h(float x) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x)); return h; }

template <int NC>
__device__ __forceinline__ void linea_attn_bsparse(
    const void* __restrict__ q, const void* __restrict__ k, const void* __restrict__ v, int in_kind,
    const unsigned char* __restrict__ mask, void* __restrict__ o, float* __restrict__ lse,
    int T, int S, int Hq, int Hkv, int D, int bm, int bn, int maskB, int maskH, int QB, int KB,
    float scale_log2, int causal, int out_kind)
{
    extern __shared__ float linea_smem[];
    float* Qs = linea_smem;
    float* Ks = Qs + LINEA_BM * D;
    float* Vs = Ks + LINEA_BN * (D + 1);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int m0 = blockIdx.x * LINEA_BM, h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (Hq / Hkv);
    const long qRow = (long)Hq * D, kRow = (long)Hkv * D;
    const long qb = ((long)b * T) * qRow + (long)h * D;  // element offsets
    const long kb = ((long)b * S) * kRow + (long)hk * D;
    const unsigned char* mb = mask + (long)b * maskB + (long)h * maskH;
    for (int idx = tid; idx < LINEA_BM * D; idx += blockDim.x) {
        int r = idx / D, d = idx - r * D;
        Qs[idx] = (m0 + r < T) ? linea_load(q, qb + (long)(m0 + r) * qRow + d, in_kind) : 0.f;
    }
    const int shift = S - T, lastRow = min(m0 + LINEA_BM, T) - 1;
    const int nEnd = causal ? max(0, min(S, lastRow + shift + 1)) : S;
    const int rb0 = m0 / bm, rb1 = lastRow / bm;
    float m[8], l[8], acc[8][NC];
#pragma unroll
    for (int r = 0; r < 8; ++r) {
        m[r] = LINEA_NEG_INF; l[r] = 0.f;
#pragma unroll
        for (int c = 0; c < NC; ++c) acc[r][c] = 0.f;
    }
    for (int n0 = 0; n0 < nEnd; n0 += LINEA_BN) {
        // Does the mask keep any block this 64 x 32 tile touches?
        const int cb0 = n0 / bn, cb1 = min(n0 + LINEA_BN, S) - 1;
        const int ncb = cb1 / bn - cb0 + 1, pairs = (rb1 - rb0 + 1) * ncb;
        int any = 0;
        for (int idx = tid; idx < pairs && !any; idx += blockDim.x) {
            const int rb = rb0 + idx / ncb, cb = cb0 + idx % ncb;
            any = mb[(long)rb * KB + cb] != 0;
        }
        if (!__syncthreads_or(any)) continue;
        for (int idx = tid; idx < LINEA_BN * D; idx += blockDim.x) {
            int r = idx / D, d = idx - r * D;
            bool in = n0 + r < S;
            Ks[r * (D + 1) + d] = in ? linea_load(k, kb + (long)(n0 + r) * kRow + d, in_kind) : 0.f;
            Vs[r * D + d] = in ? linea_load(v, kb + (long)(n0 + r) * kRow + d, in_kind) : 0.f;
        }
        __syncthreads();
        const int j = n0 + lane;
        const unsigned char* mcol = mb + (j < S ? j / bn : 0);
#pragma unroll
        for (int r = 0; r < 8; ++r) {
            const int row = warp * 8 + r, i = m0 + row;
            if (i >= T) continue;  // warp-uniform
            const float* qr = Qs + row * D;
            const float* kr = Ks + lane * (D + 1);
            float s = 0.f;
            for (int d = 0; d < D; ++d) s = fmaf(qr[d], kr[d], s);
            s *= scale_log2;
            const bool visible = j < S && (!causal || j <= i + shift) && mcol[(long)(i / bm) * KB] != 0;
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
#pragma unroll 4  // fully unrolled, 8 rows x 32 keys made NVRTC take ~7 s per entry
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
        __syncthreads();  // before the next tile overwrites Ks / Vs
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
                const float val = acc[r][c] * inv;
                if (out_kind == 1) ((unsigned short*)o)[base + d] = linea_f2bf(val);
                else if (out_kind == 2) ((unsigned short*)o)[base + d] = linea_f2h(val);
                else ((float*)o)[base + d] = val;
            }
        }
        if (lane == 0 && lse != 0)
            lse[((long)b * T + i) * Hq + h] = l[r] > 0.f ? (m[r] + log2f(l[r])) * 0.69314718055994531f : LINEA_NEG_INF;
    }
}

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_bsparse_d64)
extern "C" __global__ void __launch_bounds__(256) linea_attn_bsparse_d64(const void* q, const void* k, const void* v, int in_kind, const unsigned char* mask, void* o, float* lse, int T, int S, int Hq, int Hkv, int D, int bm, int bn, int maskB, int maskH, int QB, int KB, float scale_log2, int causal, int out_kind) {
    linea_attn_bsparse<2>(q, k, v, in_kind, mask, o, lse, T, S, Hq, Hkv, D, bm, bn, maskB, maskH, QB, KB, scale_log2, causal, out_kind);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_bsparse_d128)
extern "C" __global__ void __launch_bounds__(256) linea_attn_bsparse_d128(const void* q, const void* k, const void* v, int in_kind, const unsigned char* mask, void* o, float* lse, int T, int S, int Hq, int Hkv, int D, int bm, int bn, int maskB, int maskH, int QB, int KB, float scale_log2, int causal, int out_kind) {
    linea_attn_bsparse<4>(q, k, v, in_kind, mask, o, lse, T, S, Hq, Hkv, D, bm, bn, maskB, maskH, QB, KB, scale_log2, causal, out_kind);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_bsparse_d256)
extern "C" __global__ void __launch_bounds__(256) linea_attn_bsparse_d256(const void* q, const void* k, const void* v, int in_kind, const unsigned char* mask, void* o, float* lse, int T, int S, int Hq, int Hkv, int D, int bm, int bn, int maskB, int maskH, int QB, int KB, float scale_log2, int causal, int out_kind) {
    linea_attn_bsparse<8>(q, k, v, in_kind, mask, o, lse, T, S, Hq, Hkv, D, bm, bn, maskB, maskH, QB, KB, scale_log2, causal, out_kind);
}
#endif
