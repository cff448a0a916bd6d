// CUDA C source of the tensor-core flash-attention forward kernel (bf16 inputs, sm_80 or newer).
// Extracted by scripts/check_kernels.py: keep the markers.

extension CUDAKernels {
    // LINEA-KERNEL-BEGIN attention_mma
    /// Flash attention forward on tensor cores (`mma.sync` m16n8k16 bf16, fp32 accumulation), header-free PTX.
    /// Entries `linea_attn_mma_bf16_d64`, `linea_attn_mma_bf16_d128`.
    public static let attentionMMA = #"""
// Linea: flash attention forward, tensor cores (sm_80+), bf16 in, fp32 accumulate.
// q [B,T,Hq,D], k/v [B,S,Hkv,D] bf16; o [B,T,Hq,D] bf16 or fp32; lse [B,T,Hq] fp32 (natural log).
// Masking as in the portable kernel: query i at pos = i + S - T sees j when
// (!causal || j <= pos) && (window <= 0 || j > pos - window); empty rows give o = 0, lse = -inf.
// Block: 256 threads = 8 warps x 16 query rows = 128 queries; key tiles of 64, double-buffered with cp.async.
// Shared memory (bf16, rows padded to D + 8 to spread banks): Q[128], K[2][64], V[2][64].
// Tuning switches (defaults are the measured best on H100): K fragments through ldmatrix, Q fragments re-read
// from shared memory instead of held in registers, minimum resident blocks per SM for the register budget.
#ifndef LINEA_MMA_KLDM
#define LINEA_MMA_KLDM 1
#endif
#ifndef LINEA_MMA_QSMEM
#define LINEA_MMA_QSMEM 0
#endif
#ifndef LINEA_MMA_MINB
#define LINEA_MMA_MINB 1
#endif
#define LINEA_NEG_INF (__int_as_float(0xff800000))

__device__ __forceinline__ float linea_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ unsigned linea_smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ void linea_cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(linea_smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void linea_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void linea_cp_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N)); }

__device__ __forceinline__ unsigned linea_pack_bf16(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ void linea_mma(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void linea_ldmatrix_x4(unsigned* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(linea_smem_addr(p)));
}
__device__ __forceinline__ void linea_ldmatrix_x4_trans(unsigned* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(linea_smem_addr(p)));
}

// Copies rows [row0, row0 + rows) of a [*, D] bf16 matrix with row stride `stride` (elements) into shared
// memory with row stride D + 8; rows at or past `limit` are zero-filled.
template <int D>
__device__ __forceinline__ void linea_load_tile(unsigned short* dst, const unsigned short* src, int row0, int rows,
                                                int limit, long stride) {
    constexpr int CPR = D / 8;  // 16-byte chunks per row
    for (int c = threadIdx.x; c < rows * CPR; c += blockDim.x) {
        const int r = c / CPR, cc = c - r * CPR;
        const bool valid = row0 + r < limit;
        const unsigned short* s = valid ? src + (long)(row0 + r) * stride + cc * 8 : src;
        linea_cp_async16(dst + r * (D + 8) + cc * 8, s, valid);
    }
}

template <int D>
__device__ __forceinline__ void linea_attn_mma(
    const unsigned short* __restrict__ q, const unsigned short* __restrict__ k, const unsigned short* __restrict__ v,
    void* __restrict__ o, float* __restrict__ lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_bf16)
{
    constexpr int BM = 128, BN = 64, LD = D + 8, NT = D / 8, KS = D / 16;
    extern __shared__ uint4 linea_smem4[];
    unsigned short* Qs = (unsigned short*)linea_smem4;
    unsigned short* Ks = Qs + BM * LD;
    unsigned short* Vs = Ks + 2 * BN * LD;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int m0 = (gridDim.x - 1 - blockIdx.x) * BM;  // heaviest causal tiles first
    const int h = blockIdx.y, b = blockIdx.z, hk = h / (Hq / Hkv);
    const long qStride = (long)Hq * D, kStride = (long)Hkv * D;
    const unsigned short* qb = q + (long)b * T * qStride + (long)h * D;
    const unsigned short* kb = k + (long)b * S * kStride + (long)hk * D;
    const unsigned short* vb = v + (long)b * S * kStride + (long)hk * D;

    const int shift = S - T;
    const int lastRow = min(m0 + BM, T) - 1;
    int nBegin = 0, nEnd = S;
    if (causal) nEnd = max(0, min(S, lastRow + shift + 1));
    if (window > 0) nBegin = max(0, m0 + shift - window + 1);
    const int tiles = nEnd > nBegin ? (nEnd - nBegin + BN - 1) / BN : 0;

    linea_load_tile<D>(Qs, qb, m0, BM, T, qStride);
    linea_cp_commit();
    if (tiles > 0) {
        linea_load_tile<D>(Ks, kb, nBegin, BN, S, kStride);
        linea_load_tile<D>(Vs, vb, nBegin, BN, S, kStride);
    }
    linea_cp_commit();
    linea_cp_wait<1>();
    __syncthreads();

    const int rowA = warp * 16 + g;
    const int mat = lane >> 3, r8 = lane & 7;  // ldmatrix: this lane addresses row r8 of matrix `mat`
    // A fragments of Q for k-step ks: matrices (rows 0-7 | 8-15) x (cols 0-7 | 8-15) of the warp's 16 rows.
    const unsigned short* qLane = Qs + (warp * 16 + (mat & 1) * 8 + r8) * LD + (mat >> 1) * 8;
#if !LINEA_MMA_QSMEM
    unsigned qf[KS][4];
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) linea_ldmatrix_x4(qf[ks], qLane + ks * 16);
#endif
    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    float mRow[2] = {LINEA_NEG_INF, LINEA_NEG_INF}, lRow[2] = {0.f, 0.f};
    const int pos0 = m0 + rowA + shift;  // row g; row g + 8 is pos0 + 8
    const int warpPosLo = m0 + warp * 16 + shift, warpPosHi = warpPosLo + 15;

    for (int it = 0; it < tiles; ++it) {
        const int n0 = nBegin + it * BN, buf = it & 1;
        if (it + 1 < tiles) {
            linea_load_tile<D>(Ks + (buf ^ 1) * BN * LD, kb, n0 + BN, BN, S, kStride);
            linea_load_tile<D>(Vs + (buf ^ 1) * BN * LD, vb, n0 + BN, BN, S, kStride);
            linea_cp_commit();
            linea_cp_wait<1>();
        } else {
            linea_cp_wait<0>();
        }
        __syncthreads();
        const unsigned short* Kt = Ks + buf * BN * LD;
        const unsigned short* Vt = Vs + buf * BN * LD;

        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
#if LINEA_MMA_QSMEM
            unsigned qa[4];
            linea_ldmatrix_x4(qa, qLane + ks * 16);
#else
            const unsigned* qa = qf[ks];
#endif
#if LINEA_MMA_KLDM
            // B fragments of two key n-tiles at once: matrices (keys nt*8.. | (nt+1)*8..) x (d lo | d hi).
#pragma unroll
            for (int nt = 0; nt < 8; nt += 2) {
                unsigned kf[4];
                linea_ldmatrix_x4(kf, Kt + ((nt + (mat >> 1)) * 8 + r8) * LD + ks * 16 + (mat & 1) * 8);
                linea_mma(s[nt], qa, kf[0], kf[1]);
                linea_mma(s[nt + 1], qa, kf[2], kf[3]);
            }
#else
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                const unsigned short* kr = Kt + (nt * 8 + g) * LD + ks * 16 + 2 * t;
                linea_mma(s[nt], qa, *(const unsigned*)kr, *(const unsigned*)(kr + 8));
            }
#endif
        }
        const bool needMask = (n0 + BN > S) || (causal && n0 + BN - 1 > warpPosLo) ||
                              (window > 0 && n0 <= warpPosHi - window);
        if (needMask) {  // raw scores; scale_log2 > 0 is applied inside the exponent below
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int j = n0 + nt * 8 + 2 * t + (e & 1);
                    const int pos = pos0 + (e >> 1) * 8;
                    const bool visible = j < S && (!causal || j <= pos) && (window <= 0 || j > pos - window);
                    if (!visible) s[nt][e] = LINEA_NEG_INF;
                }
            }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float mx = LINEA_NEG_INF;
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mNew = fmaxf(mRow[r], mx * scale_log2);  // running max, log2 units
            const float mRef = mNew == LINEA_NEG_INF ? 0.f : mNew;
            const float alpha = linea_ex2(mRow[r] - mRef);
            float sum = 0.f;
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                s[nt][2 * r] = linea_ex2(fmaf(s[nt][2 * r], scale_log2, -mRef));
                s[nt][2 * r + 1] = linea_ex2(fmaf(s[nt][2 * r + 1], scale_log2, -mRef));
                sum += s[nt][2 * r] + s[nt][2 * r + 1];
            }
            lRow[r] = lRow[r] * alpha + sum;
            mRow[r] = mNew;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) { acc[nt][2 * r] *= alpha; acc[nt][2 * r + 1] *= alpha; }
        }
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            unsigned a[4];
            a[0] = linea_pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            a[1] = linea_pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            a[2] = linea_pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = linea_pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            const unsigned short* vrow = Vt + (kk * 16 + (mat & 1) * 8 + r8) * LD + (mat >> 1) * 8;
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                unsigned bv[4];
                linea_ldmatrix_x4_trans(bv, vrow + np * 16);
                linea_mma(acc[2 * np], a, bv[0], bv[1]);
                linea_mma(acc[2 * np + 1], a, bv[2], bv[3]);
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float l = lRow[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const int i = m0 + rowA + r * 8;
        if (i >= T) continue;
        const float inv = l > 0.f ? 1.f / l : 0.f;
        const long base = (((long)b * T + i) * Hq + h) * D;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int d = nt * 8 + 2 * t;
            const float x0 = acc[nt][2 * r] * inv, x1 = acc[nt][2 * r + 1] * inv;
            if (out_bf16) *(unsigned*)((unsigned short*)o + base + d) = linea_pack_bf16(x0, x1);
            else *(float2*)((float*)o + base + d) = make_float2(x0, x1);
        }
        if (t == 0 && lse != 0)
            lse[((long)b * T + i) * Hq + h] = l > 0.f ? (mRow[r] + log2f(l)) * 0.69314718055994531f : LINEA_NEG_INF;
    }
}

extern "C" __global__ void __launch_bounds__(256, LINEA_MMA_MINB) linea_attn_mma_bf16_d64(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_bf16) {
    linea_attn_mma<64>(q, k, v, o, lse, T, S, Hq, Hkv, scale_log2, causal, window, out_bf16);
}

extern "C" __global__ void __launch_bounds__(256, LINEA_MMA_MINB) linea_attn_mma_bf16_d128(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_bf16) {
    linea_attn_mma<128>(q, k, v, o, lse, T, S, Hq, Hkv, scale_log2, causal, window, out_bf16);
}
"""#
    // LINEA-KERNEL-END
}
