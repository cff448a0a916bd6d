// Linea: split-KV decode attention (flash-decoding).
// q [B,T,Hq,D], k/v [B,S,Hkv,D] (fp32, bf16 or fp16) as the first S of kvRows rows per sequence (a KV cache read in
// place). G = Hq / Hkv query heads share one KV head; the T*G query rows
// of one (b, kv head) are handled together so K/V are read once per partition. Row r -> t = r / G, head hk*G + r % G.
// Query t sits at position t + S - T (bottom-right aligned); causal rows see keys j <= that position.
// Partial kernel: grid (partitions, B*Hkv, row groups of RB), block 128 = 4 warps, 4 RB (DMAX + 2) floats of dynamic
// shared memory. Each partition covers keys
// [p*len, min(S, (p+1)*len)). Within a warp LPK = DMAX/8 lanes hold one key (8 columns each) and 32/LPK keys are
// processed side by side, each lane group with its own online softmax; groups, then warps, are merged at the end.
// Partial o [P,B,T,Hq,D] fp32 (normalized within the partition), partial lse [P,B,T,Hq] fp32 in log2 units.
// Merge kernel: grid (B*T*Hq), block 128: o = sum_p 2^(lse_p - M) o_p / sum_p 2^(lse_p - M), lse = ln2 (M + log2 sum)
// (natural log), o = 0 and lse = -inf for a row that sees no key. Output fp32, bf16 or fp16 (out_kind 0, 1, 2).
#define LINEA_SK_NW 4
#ifndef LINEA_SK_U16
#define LINEA_SK_U16 4  // key groups per warp step for 16-bit inputs (2 for fp32); -D to tune
#endif
// With -DLINEA_SELECT -DLINEA_ONLY_<entry>, only that entry is compiled (first use compiles one, not all).
#define LINEA_NEG_INF (__int_as_float(0xff800000))

struct linea_bf16 { unsigned short x; };
struct linea_f16 { unsigned short x; };
__device__ __forceinline__ float linea_h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ float linea_bf2f(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }

// 8 consecutive elements of a row (element offset c0 of D), kept raw (as loaded) until used so that more keys fit
// in registers: fp32 8 floats, bf16/fp16 4 words. VEC (D % 8 == 0, uniform): 16/32-byte aligned vector loads, lanes
// past D read nothing; else guarded scalar loads.
template <typename Tin> struct linea_raw8;
template <> struct linea_raw8<float> {
    float x[8];
    __device__ __forceinline__ void load(const float* p, int c0, int D, bool VEC) {
        if (VEC) {
            float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
            if (c0 < D) { a = *(const float4*)p; b = *(const float4*)(p + 4); }
            x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w; x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
        } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) x[i] = c0 + i < D ? p[i] : 0.f;
        }
    }
    __device__ __forceinline__ void get(float* y) const {
#pragma unroll
        for (int i = 0; i < 8; ++i) y[i] = x[i];
    }
};
template <typename T16> struct linea_raw8_16 {
    unsigned int w[4];
    __device__ __forceinline__ void load(const T16* p, int c0, int D, bool VEC) {
        if (VEC) {
            uint4 a = make_uint4(0u, 0u, 0u, 0u);
            if (c0 < D) a = *(const uint4*)p;
            w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w;
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const unsigned int lo = c0 + 2 * i < D ? p[2 * i].x : 0u, hi = c0 + 2 * i + 1 < D ? p[2 * i + 1].x : 0u;
                w[i] = lo | (hi << 16);
            }
        }
    }
};
template <> struct linea_raw8<linea_bf16> : linea_raw8_16<linea_bf16> {
    __device__ __forceinline__ void get(float* y) const {
#pragma unroll
        for (int i = 0; i < 4; ++i) { y[2 * i] = __uint_as_float(w[i] << 16); y[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u); }
    }
};
template <> struct linea_raw8<linea_f16> : linea_raw8_16<linea_f16> {
    __device__ __forceinline__ void get(float* y) const {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            y[2 * i] = linea_h2f((unsigned short)(w[i] & 0xffffu)); y[2 * i + 1] = linea_h2f((unsigned short)(w[i] >> 16));
        }
    }
};

template <typename Tin, int DMAX, int RB>
__device__ __forceinline__ void linea_splitkv_partial(
    const Tin* __restrict__ q, const Tin* __restrict__ k, const Tin* __restrict__ v,
    float* __restrict__ po, float* __restrict__ plse,
    int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows)
{
    const bool VEC = (D & 7) == 0;
    // LPK lanes per key, KPW keys side by side, U of those per step (fewer for fp32, whose raw rows take twice the
    // registers): STEP keys per warp step.
    constexpr int LPK = DMAX / 8, KPW = 32 / LPK, U = sizeof(Tin) == 4 ? 2 : LINEA_SK_U16, STEP = KPW * U;
    // Dynamic shared memory: acc [NW][RB][DMAX], m, l [NW][RB].
    extern __shared__ float linea_sk_smem[];
    float (*sm_acc)[RB][DMAX] = (float (*)[RB][DMAX])linea_sk_smem;
    float (*sm_m)[RB] = (float (*)[RB])(linea_sk_smem + LINEA_SK_NW * RB * DMAX);
    float (*sm_l)[RB] = (float (*)[RB])(linea_sk_smem + LINEA_SK_NW * RB * (DMAX + 1));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane % LPK, kg = lane / LPK, c0 = sub * 8;
    const int part = blockIdx.x, b = blockIdx.y / Hkv, hk = blockIdx.y % Hkv;
    const int G = Hq / Hkv, rows = T * G, r0 = blockIdx.z * RB;
    const int nr = min(RB, rows - r0);
    const int j0 = part * len, j1 = min(S, j0 + len);
    float qr[RB][8], m[RB], l[RB], acc[RB][8];
    int limit[RB];
#pragma unroll
    for (int r = 0; r < RB; ++r) {
        const int row = r0 + min(r, nr - 1), t = row / G, h = hk * G + row % G;
        linea_raw8<Tin> raw;
        raw.load(q + (((long)b * T + t) * Hq + h) * D + c0, c0, D, VEC);
        raw.get(qr[r]);
        limit[r] = causal ? t + S - T : S - 1;
        m[r] = LINEA_NEG_INF; l[r] = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[r][i] = 0.f;
    }
    const long kvRow = (long)Hkv * D;
    const Tin* kb = k + (long)b * kvRows * kvRow + (long)hk * D + c0;
    const Tin* vb = v + (long)b * kvRows * kvRow + (long)hk * D + c0;
    // Software pipeline: the next step's K/V rows are loaded (raw) while the current ones are used.
    linea_raw8<Tin> kn[U], vn[U];
    int base = j0 + warp * STEP;
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const int j = min(base + u * KPW + kg, j1 - 1);  // out-of-range keys are masked below; load a valid row
        kn[u].load(kb + (long)j * kvRow, c0, D, VEC);
        vn[u].load(vb + (long)j * kvRow, c0, D, VEC);
    }
    for (; base < j1; base += LINEA_SK_NW * STEP) {
        linea_raw8<Tin> kc[U], vc[U];
        int jj[U];
#pragma unroll
        for (int u = 0; u < U; ++u) { kc[u] = kn[u]; vc[u] = vn[u]; jj[u] = base + u * KPW + kg; }
        const int next = base + LINEA_SK_NW * STEP;
        if (next < j1) {
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int j = min(next + u * KPW + kg, j1 - 1);
                kn[u].load(kb + (long)j * kvRow, c0, D, VEC);
                vn[u].load(vb + (long)j * kvRow, c0, D, VEC);
            }
        }
        float s[RB][U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            float kr[8];
            kc[u].get(kr);
#pragma unroll
            for (int r = 0; r < RB; ++r) {
                float d = 0.f;
#pragma unroll
                for (int i = 0; i < 8; ++i) d = fmaf(qr[r][i], kr[i], d);
                s[r][u] = d;
            }
        }
#pragma unroll
        for (int r = 0; r < RB; ++r) {
            if (r >= nr) break;  // uniform over the block
#pragma unroll
            for (int u = 0; u < U; ++u) {
                float d = s[r][u];
#pragma unroll
                for (int off = LPK / 2; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
                s[r][u] = (jj[u] < j1 && jj[u] <= limit[r]) ? d * scale_log2 : LINEA_NEG_INF;
            }
        }
#pragma unroll
        for (int r = 0; r < RB; ++r) {
            if (r >= nr) break;
            float mn = m[r];
#pragma unroll
            for (int u = 0; u < U; ++u) mn = fmaxf(mn, s[r][u]);
            if (mn == LINEA_NEG_INF) continue;  // nothing visible yet for this lane group
            const float alpha = exp2f(m[r] - mn);  // 0 when m was -inf
            float ps = 0.f;
#pragma unroll
            for (int u = 0; u < U; ++u) { s[r][u] = exp2f(s[r][u] - mn); ps += s[r][u]; }
            l[r] = l[r] * alpha + ps;
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[r][i] *= alpha;
            m[r] = mn;
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            float vr[8];
            vc[u].get(vr);
#pragma unroll
            for (int r = 0; r < RB; ++r) {
                if (r >= nr) break;
                if (m[r] == LINEA_NEG_INF) continue;
#pragma unroll
                for (int i = 0; i < 8; ++i) acc[r][i] = fmaf(s[r][u], vr[i], acc[r][i]);
            }
        }
    }
    // Merge the lane groups of the warp (lanes with the same `sub`).
#pragma unroll
    for (int off = LPK; off < 32; off <<= 1) {
#pragma unroll
        for (int r = 0; r < RB; ++r) {
            const float mo = __shfl_xor_sync(0xffffffffu, m[r], off), lo = __shfl_xor_sync(0xffffffffu, l[r], off);
            const float mm = fmaxf(m[r], mo);
            const float a = mm == LINEA_NEG_INF ? 0.f : exp2f(m[r] - mm), c = mm == LINEA_NEG_INF ? 0.f : exp2f(mo - mm);
            l[r] = l[r] * a + lo * c;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const float ao = __shfl_xor_sync(0xffffffffu, acc[r][i], off);
                acc[r][i] = acc[r][i] * a + ao * c;
            }
            m[r] = mm;
        }
    }
    if (kg == 0) {
#pragma unroll
        for (int r = 0; r < RB; ++r) {
#pragma unroll
            for (int i = 0; i < 8; ++i) sm_acc[warp][r][c0 + i] = acc[r][i];
            if (sub == 0) { sm_m[warp][r] = m[r]; sm_l[warp][r] = l[r]; }
        }
    }
    __syncthreads();
    // Merge the warps: thread -> (row, column) pairs.
    for (int idx = threadIdx.x; idx < nr * D; idx += blockDim.x) {
        const int r = idx / D, c = idx - r * D;
        float mm = LINEA_NEG_INF;
#pragma unroll
        for (int w = 0; w < LINEA_SK_NW; ++w) mm = fmaxf(mm, sm_m[w][r]);
        float sum = 0.f, o = 0.f;
        if (mm != LINEA_NEG_INF) {
#pragma unroll
            for (int w = 0; w < LINEA_SK_NW; ++w) {
                const float f = exp2f(sm_m[w][r] - mm);
                sum += sm_l[w][r] * f;
                o += sm_acc[w][r][c] * f;
            }
        }
        const int row = r0 + r, t = row / G, h = hk * G + row % G;
        const long out = (((long)part * B + b) * T + t) * Hq + h;
        po[out * D + c] = sum > 0.f ? o / sum : 0.f;
        if (c == 0) plse[out] = sum > 0.f ? mm + log2f(sum) : LINEA_NEG_INF;
    }
}

__device__ __forceinline__ unsigned short linea_f2bf(float x) {
    unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
__device__ __forceinline__ unsigned short linea_f2h(float x) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x)); return h; }

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_merge)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_merge(const float* po, const float* plse, void* o, float* lse, int P, int rowsTotal, int D, int out_kind) {
    const long row = blockIdx.x;  // (b, t, h)
    // Unrolled: the partitions' loads are independent, so several are in flight (a plain loop waits on each).
    float mm = LINEA_NEG_INF;
#pragma unroll 8
    for (int p = 0; p < P; ++p) mm = fmaxf(mm, plse[(long)p * rowsTotal + row]);
    float sum = 0.f;
    if (mm != LINEA_NEG_INF) {
#pragma unroll 8
        for (int p = 0; p < P; ++p) sum += exp2f(plse[(long)p * rowsTotal + row] - mm);
    }
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
        float acc = 0.f;
        if (sum > 0.f) {
#pragma unroll 8
            for (int p = 0; p < P; ++p) {
                const float w = plse[(long)p * rowsTotal + row];  // -inf for an empty partition: weight 0
                acc += exp2f(w - mm) * (w == LINEA_NEG_INF ? 0.f : po[((long)p * rowsTotal + row) * D + c]);
            }
            acc /= sum;
        }
        const long i = row * D + c;
        if (out_kind == 0) ((float*)o)[i] = acc;
        else if (out_kind == 1) ((unsigned short*)o)[i] = linea_f2bf(acc);
        else ((unsigned short*)o)[i] = linea_f2h(acc);
    }
    if (threadIdx.x == 0 && lse) lse[row] = sum > 0.f ? (mm + log2f(sum)) * 0.69314718055994531f : LINEA_NEG_INF;
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_f32_d64_r4)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_f32_d64_r4(const float* q, const float* k, const float* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<float, 64, 4>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_f32_d64_r8)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_f32_d64_r8(const float* q, const float* k, const float* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<float, 64, 8>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_f32_d128_r4)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_f32_d128_r4(const float* q, const float* k, const float* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<float, 128, 4>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_f32_d128_r8)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_f32_d128_r8(const float* q, const float* k, const float* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<float, 128, 8>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_f32_d256_r4)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_f32_d256_r4(const float* q, const float* k, const float* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<float, 256, 4>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_f32_d256_r8)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_f32_d256_r8(const float* q, const float* k, const float* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<float, 256, 8>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_bf16_d64_r4)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_bf16_d64_r4(const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<linea_bf16, 64, 4>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_bf16_d64_r8)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_bf16_d64_r8(const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<linea_bf16, 64, 8>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_bf16_d128_r4)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_bf16_d128_r4(const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<linea_bf16, 128, 4>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_bf16_d128_r8)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_bf16_d128_r8(const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<linea_bf16, 128, 8>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_bf16_d256_r4)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_bf16_d256_r4(const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<linea_bf16, 256, 4>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_bf16_d256_r8)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_bf16_d256_r8(const linea_bf16* q, const linea_bf16* k, const linea_bf16* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<linea_bf16, 256, 8>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_f16_d64_r4)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_f16_d64_r4(const linea_f16* q, const linea_f16* k, const linea_f16* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<linea_f16, 64, 4>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_f16_d64_r8)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_f16_d64_r8(const linea_f16* q, const linea_f16* k, const linea_f16* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<linea_f16, 64, 8>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_f16_d128_r4)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_f16_d128_r4(const linea_f16* q, const linea_f16* k, const linea_f16* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<linea_f16, 128, 4>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_f16_d128_r8)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_f16_d128_r8(const linea_f16* q, const linea_f16* k, const linea_f16* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<linea_f16, 128, 8>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_f16_d256_r4)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_f16_d256_r4(const linea_f16* q, const linea_f16* k, const linea_f16* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<linea_f16, 256, 4>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_splitkv_f16_d256_r8)
extern "C" __global__ void __launch_bounds__(128) linea_splitkv_f16_d256_r8(const linea_f16* q, const linea_f16* k, const linea_f16* v, float* po, float* plse, int B, int T, int S, int Hq, int Hkv, int D, int len, float scale_log2, int causal, int kvRows) {
    linea_splitkv_partial<linea_f16, 256, 8>(q, k, v, po, plse, B, T, S, Hq, Hkv, D, len, scale_log2, causal, kvRows);
}
#endif
