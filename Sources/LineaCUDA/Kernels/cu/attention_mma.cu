// Linea: flash attention forward, tensor cores (sm_80+), bf16 or fp16 in, fp32 accumulate.
// q [B,T,Hq,D], k/v [B,S,Hkv,D] bf16 or fp16 (the first S of kvRows rows per sequence); o [B,T,Hq,D] fp32, bf16 or fp16 (out_mode 0/1/2); lse [B,T,Hq] fp32 (natural log).
// Masking as in the portable kernel: query i at pos = i + S - T sees j when
// (!causal || j <= pos) && (window <= 0 || j > pos - window); empty rows give o = 0, lse = -inf.
// Block: NW warps x (16 WM) query rows = BM queries; key tiles of BN, double-buffered with cp.async.
// Shared memory (bf16, rows padded to D + 8 to spread banks): Q[BM], K[2][BN], V[2][BN].
// Tuning switches (defaults are the measured best on H100; CUDAAttention.TensorCoreConfig mirrors them):
// warps per block, keys per tile, 16-row m-subtiles per warp (each K/V fragment feeds WM MMAs), Q fragments re-read from
// shared memory instead of held in registers, minimum resident blocks per SM (caps registers), one barrier per
// key tile (ONEBAR), separate straight-line bodies for masked and unmasked tiles (SPLIT).
#ifndef LINEA_MMA_NW
#define LINEA_MMA_NW 8
#endif
#ifndef LINEA_MMA_WM
#define LINEA_MMA_WM 2
#endif
#ifndef LINEA_MMA_BN
#define LINEA_MMA_BN 64
#endif
#ifndef LINEA_MMA_QSMEM
#define LINEA_MMA_QSMEM 1
#endif
#ifndef LINEA_MMA_MINB
#define LINEA_MMA_MINB 1
#endif
#ifndef LINEA_MMA_ONEBAR
#define LINEA_MMA_ONEBAR 1
#endif
#ifndef LINEA_MMA_SPLIT
#define LINEA_MMA_SPLIT 1
#endif
#define LINEA_NEG_INF (__int_as_float(0xff800000))
#include "mma_tiles.cuh"

template <int D, bool F16>
__device__ __forceinline__ void linea_attn_mma(
    const unsigned short* __restrict__ q, const unsigned short* __restrict__ k, const unsigned short* __restrict__ v,
    void* __restrict__ o, float* __restrict__ lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_mode, int kvRows)
{
    constexpr int WM = LINEA_MMA_WM, BM = 16 * WM * LINEA_MMA_NW, BN = LINEA_MMA_BN, SN = BN / 8, LD = D + 8, NT = D / 8, KS = D / 16;
    extern __shared__ uint4 linea_smem4[];
    unsigned short* Qs = (unsigned short*)linea_smem4;
    unsigned short* Ks = Qs + BM * LD;
    unsigned short* Vs = Ks + 2 * BN * LD;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int m0 = (gridDim.x - 1 - blockIdx.x) * BM;  // heaviest causal tiles first
    const int h = blockIdx.y, b = blockIdx.z, hk = h / (Hq / Hkv);
    const long qStride = (long)Hq * D, kStride = (long)Hkv * D;
    const unsigned short* qb = q + (long)b * T * qStride + (long)h * D;
    const unsigned short* kb = k + (long)b * kvRows * kStride + (long)hk * D;
    const unsigned short* vb = v + (long)b * kvRows * kStride + (long)hk * D;

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

    // Warp `warp` owns rows warp*16*WM + mi*16 + (g | g + 8) of the block, mi < WM.
    const int rowW = warp * 16 * WM;
    const int mat = lane >> 3, r8 = lane & 7;  // ldmatrix: this lane addresses row r8 of matrix `mat`
    // A fragments of Q (m-subtile mi, k-step ks): matrices (rows 0-7 | 8-15) x (cols 0-7 | 8-15).
    const unsigned short* qLane = Qs + (rowW + (mat & 1) * 8 + r8) * LD + (mat >> 1) * 8;
#if !LINEA_MMA_QSMEM
    unsigned qf[WM][KS][4];
#pragma unroll
    for (int mi = 0; mi < WM; ++mi)
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) linea_ldmatrix_x4(qf[mi][ks], qLane + mi * 16 * LD + ks * 16);
#endif
    float acc[WM][NT][4];
#pragma unroll
    for (int mi = 0; mi < WM; ++mi)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) acc[mi][nt][0] = acc[mi][nt][1] = acc[mi][nt][2] = acc[mi][nt][3] = 0.f;
    float mRow[WM][2], lRow[WM][2];
#pragma unroll
    for (int mi = 0; mi < WM; ++mi) { mRow[mi][0] = mRow[mi][1] = LINEA_NEG_INF; lRow[mi][0] = lRow[mi][1] = 0.f; }
    const int pos0 = m0 + rowW + g + shift;  // position of row g of m-subtile 0
    const int warpPosLo = m0 + rowW + shift, warpPosHi = warpPosLo + 16 * WM - 1;

    for (int it = 0; it < tiles; ++it) {
        const int n0 = nBegin + it * BN, buf = it & 1;
#if LINEA_MMA_ONEBAR
        // One barrier per tile: after it, tile `it` is visible to all and every warp is done with tile it - 1,
        // whose buffer then receives tile it + 1 while this one is computed.
        linea_cp_wait<0>();
        __syncthreads();
        if (it + 1 < tiles) {
            linea_load_tile<D>(Ks + (buf ^ 1) * BN * LD, kb, n0 + BN, BN, S, kStride);
            linea_load_tile<D>(Vs + (buf ^ 1) * BN * LD, vb, n0 + BN, BN, S, kStride);
            linea_cp_commit();
        }
#else
        if (it + 1 < tiles) {
            linea_load_tile<D>(Ks + (buf ^ 1) * BN * LD, kb, n0 + BN, BN, S, kStride);
            linea_load_tile<D>(Vs + (buf ^ 1) * BN * LD, vb, n0 + BN, BN, S, kStride);
            linea_cp_commit();
            linea_cp_wait<1>();
        } else {
            linea_cp_wait<0>();
        }
        __syncthreads();
#endif
        const unsigned short* Kt = Ks + buf * BN * LD;
        const unsigned short* Vt = Vs + buf * BN * LD;
        // Rows of this warp that are all before the tile's first key see nothing of it (causal): skip the math.
        if (causal && n0 > warpPosHi) {
#if !LINEA_MMA_ONEBAR
            __syncthreads();
#endif
            continue;
        }

        const bool needMask = (n0 + BN > S) || (causal && n0 + BN - 1 > warpPosLo) ||
                              (window > 0 && n0 <= warpPosHi - window);
    auto body = [&](auto maskTag) {
        constexpr bool kMask = decltype(maskTag)::value;
        float s[WM][SN][4];
#pragma unroll
        for (int mi = 0; mi < WM; ++mi)
#pragma unroll
            for (int nt = 0; nt < SN; ++nt) s[mi][nt][0] = s[mi][nt][1] = s[mi][nt][2] = s[mi][nt][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
#if LINEA_MMA_QSMEM
            unsigned qa[WM][4];
#pragma unroll
            for (int mi = 0; mi < WM; ++mi) linea_ldmatrix_x4(qa[mi], qLane + mi * 16 * LD + ks * 16);
#endif
#pragma unroll
            for (int nt = 0; nt < SN; nt += 2) {
                // B fragments of two key n-tiles at once: matrices (keys nt*8.. | (nt+1)*8..) x (d lo | d hi).
                unsigned kf[4];
                linea_ldmatrix_x4(kf, Kt + ((nt + (mat >> 1)) * 8 + r8) * LD + ks * 16 + (mat & 1) * 8);
#pragma unroll
                for (int mi = 0; mi < WM; ++mi) {
#if LINEA_MMA_QSMEM
                    const unsigned* a = qa[mi];
#else
                    const unsigned* a = qf[mi][ks];
#endif
                    linea_mma<F16>(s[mi][nt], a, kf[0], kf[1]);
                    linea_mma<F16>(s[mi][nt + 1], a, kf[2], kf[3]);
                }
            }
        }
        if (kMask && (!LINEA_MMA_SPLIT ? needMask : true)) {  // raw scores; scale_log2 > 0 is applied inside the exponent below
#pragma unroll
            for (int mi = 0; mi < WM; ++mi)
#pragma unroll
                for (int nt = 0; nt < SN; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int j = n0 + nt * 8 + 2 * t + (e & 1);
                        const int pos = pos0 + mi * 16 + (e >> 1) * 8;
                        const bool visible = j < S && (!causal || j <= pos) && (window <= 0 || j > pos - window);
                        if (!visible) s[mi][nt][e] = LINEA_NEG_INF;
                    }
        }
        linea_mma_softmax<WM, SN, NT>(s, mRow, lRow, acc, scale_log2);
        linea_mma_pv<WM, SN, NT, BN, LD, F16>(s, Vt, mat, r8, acc);
#if !LINEA_MMA_ONEBAR
        __syncthreads();
#endif
    };
#if LINEA_MMA_SPLIT
        // Two straight-line copies of the tile body (masked / unmasked) so that ptxas can interleave the
        // QK^T MMAs of one row subtile with the softmax of the other.
        if (needMask) body(linea_bool<true>()); else body(linea_bool<false>());
#else
        body(linea_bool<true>());
#endif
    }

    linea_mma_store<WM, NT, D>(acc, mRow, lRow, m0 + rowW, g, t, T, Hq, h, b, o, lse, out_mode);
}

extern "C" __global__ void __launch_bounds__(32 * LINEA_MMA_NW, LINEA_MMA_MINB) linea_attn_mma_bf16_d64(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_mma<64, false>(q, k, v, o, lse, T, S, Hq, Hkv, scale_log2, causal, window, out_mode, kvRows);
}

extern "C" __global__ void __launch_bounds__(32 * LINEA_MMA_NW, LINEA_MMA_MINB) linea_attn_mma_bf16_d128(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_mma<128, false>(q, k, v, o, lse, T, S, Hq, Hkv, scale_log2, causal, window, out_mode, kvRows);
}
extern "C" __global__ void __launch_bounds__(32 * LINEA_MMA_NW, LINEA_MMA_MINB) linea_attn_mma_f16_d64(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_mma<64, true>(q, k, v, o, lse, T, S, Hq, Hkv, scale_log2, causal, window, out_mode, kvRows);
}

extern "C" __global__ void __launch_bounds__(32 * LINEA_MMA_NW, LINEA_MMA_MINB) linea_attn_mma_f16_d128(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_mma<128, true>(q, k, v, o, lse, T, S, Hq, Hkv, scale_log2, causal, window, out_mode, kvRows);
}
