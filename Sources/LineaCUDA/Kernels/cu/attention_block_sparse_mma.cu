// Linea: block-sparse attention forward on tensor cores (mma.sync m16n8k16, sm_80+), bf16 or fp16 in, fp32 accumulate.
// q [B,T,Hq,D], k/v [B,S,Hkv,D]; mask uint8 [Bm, Hm, QB, KB] (QB = ceil(T/bm), KB = ceil(S/bn); strides maskB, maskH
// are 0 for a broadcast dimension): query i sees key j when mask[i/bm][j/bn] != 0 and (causal) j <= i + S - T.
// o [B,T,Hq,D] fp32, bf16 or fp16 (out_mode 0/1/2); lse [B,T,Hq] fp32 natural log (-inf, o = 0 for rows that see nothing).
// The flash loop of attention_mma.cu (same fragment layouts and online softmax), restricted to the key tiles of BN = 64
// that the mask keeps: the block first ORs the mask rows its BM queries cover into a bitmask of kept key blocks
// (shared memory, one bit per key block, warp ballots), then walks the set bits, so dropped tiles are never loaded.
// Needs bn % 64 == 0 (a key tile lies in one key block) and bm % (16 WM) == 0 (a warp's rows lie in one query block:
// when a tile spans several query blocks, a warp whose own block drops the key block skips its math); the host checks both.
// Shared memory (dynamic): Q[BM], K[2][BN], V[2][BN] rows of D + 8 16-bit elements, then the bitmask words.
// Launch shapes other than the default, from CUDABlockSparse's LINEA_BSPARSE_MMA="warps rowTiles":
// linea-nvrtc-variant: w8m1 -DLINEA_BSM_NW=8 -DLINEA_BSM_WM=1  (128-query tiles)
// linea-nvrtc-variant: w4m2 -DLINEA_BSM_NW=4 -DLINEA_BSM_WM=2  (32 rows per warp)
#ifndef LINEA_BSM_NW
#define LINEA_BSM_NW 4
#endif
#ifndef LINEA_BSM_WM
#define LINEA_BSM_WM 1
#endif
#define LINEA_BSM_BN 64
#define LINEA_NEG_INF (__int_as_float(0xff800000))
#include "mma_tiles.cuh"
#include "block_bits.cuh"


// The first kept key tile at or after key block c (its first key), or -1: the next set bit of `bits` below cbEnd.
__device__ __forceinline__ int linea_bsm_next_block(const unsigned* bits, int c, int cbEnd, int bn) {
    const int kept = linea_next_set_bit(bits, c, cbEnd);
    return kept < 0 ? -1 : kept * bn;
}

template <int D, bool F16>
__device__ __forceinline__ void linea_attn_bsm(
    const unsigned short* __restrict__ q, const unsigned short* __restrict__ k, const unsigned short* __restrict__ v,
    const unsigned char* __restrict__ mask, void* __restrict__ o, float* __restrict__ lse,
    int T, int S, int Hq, int Hkv, int bm, int bn, int maskB, int maskH, int KB, float scale_log2, int causal, int out_mode)
{
    constexpr int NW = LINEA_BSM_NW, WM = LINEA_BSM_WM, BM = 16 * WM * NW, BN = LINEA_BSM_BN, SN = BN / 8, LD = D + 8,
                  NT = D / 8, KS = D / 16;
    extern __shared__ uint4 linea_smem4[];
    unsigned short* Qs = (unsigned short*)linea_smem4;
    unsigned short* Ks = Qs + BM * LD;
    unsigned short* Vs = Ks + 2 * BN * LD;
    unsigned* bits = (unsigned*)(Vs + 2 * BN * LD);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int m0 = (gridDim.x - 1 - blockIdx.x) * BM;  // heaviest causal tiles first
    const int h = blockIdx.y, b = blockIdx.z, hk = h / (Hq / Hkv);
    const long qStride = (long)Hq * D, kStride = (long)Hkv * D;
    const unsigned short* qb = q + (long)b * T * qStride + (long)h * D;
    const unsigned short* kb = k + (long)b * S * kStride + (long)hk * D;
    const unsigned short* vb = v + (long)b * S * kStride + (long)hk * D;
    const unsigned char* mb = mask + (long)b * maskB + (long)h * maskH;

    const int shift = S - T;
    const int lastRow = min(m0 + BM, T) - 1;
    const int nEnd = causal ? max(0, min(S, lastRow + shift + 1)) : S;  // keys past nEnd are hidden from every row
    const int cbEnd = nEnd > 0 ? (nEnd - 1) / bn + 1 : 0;              // key blocks that may hold a visible key
    const int rb0 = m0 / bm, rb1 = lastRow / bm;                       // query blocks of this tile's rows

    linea_load_tile<D>(Qs, qb, m0, BM, T, qStride);
    linea_cp_commit();
    // Kept key blocks of any of this tile's query blocks, 32 per ballot (the loop bound is warp-uniform).
    for (int w = warp; w * 32 < cbEnd; w += NW) {
        const int c = w * 32 + lane;
        bool keep = false;
        if (c < cbEnd)
            for (int rb = rb0; rb <= rb1; ++rb) keep = keep || mb[(long)rb * KB + c] != 0;
        const unsigned word = __ballot_sync(0xffffffffu, keep);
        if (lane == 0) bits[w] = word;
    }
    __syncthreads();  // bits visible to all: every thread then walks the same tile sequence
    int n0 = linea_bsm_next_block(bits, 0, cbEnd, bn);
    if (n0 >= 0) {
        linea_load_tile<D>(Ks, kb, n0, BN, S, kStride);
        linea_load_tile<D>(Vs, vb, n0, BN, S, kStride);
    }
    linea_cp_commit();
    linea_cp_wait<1>();
    __syncthreads();

    const int rowW = warp * 16 * WM;  // warp `warp` owns rows rowW + mi*16 + (g | g + 8) of the block, mi < WM
    const int mat = lane >> 3, r8 = lane & 7;
    const unsigned short* qLane = Qs + (rowW + (mat & 1) * 8 + r8) * LD + (mat >> 1) * 8;
    float acc[WM][NT][4];
#pragma unroll
    for (int mi = 0; mi < WM; ++mi)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) acc[mi][nt][0] = acc[mi][nt][1] = acc[mi][nt][2] = acc[mi][nt][3] = 0.f;
    float mRow[WM][2], lRow[WM][2];
#pragma unroll
    for (int mi = 0; mi < WM; ++mi) { mRow[mi][0] = mRow[mi][1] = LINEA_NEG_INF; lRow[mi][0] = lRow[mi][1] = 0.f; }
    const int pos0 = m0 + rowW + g + shift;
    const int warpPosLo = m0 + rowW + shift, warpPosHi = warpPosLo + 16 * WM - 1;
    // When the tile's rows span several query blocks, this warp's rows (all in one, as bm % (16 WM) == 0) may drop a
    // key block that another query block of the tile keeps; a warp past T has no rows at all.
    const bool warpRows = m0 + rowW < T;
    const bool perWarp = rb1 > rb0;
    const unsigned char* warpMask = mb + (long)(warpRows ? (m0 + rowW) / bm : 0) * KB;

    for (int buf = 0; n0 >= 0; buf ^= 1) {
        // The tile after n0: the next tile of the same key block, else the first of the next kept block.
        const int cb = n0 / bn;
        const int nNext = ((long)n0 + BN < min((long)nEnd, (long)(cb + 1) * bn)) ? n0 + BN : linea_bsm_next_block(bits, cb + 1, cbEnd, bn);
        // One barrier per tile (as attention_mma.cu): tile n0 is then visible and every warp is done with the
        // previous one, whose buffer receives tile nNext while this one is computed.
        linea_cp_wait<0>();
        __syncthreads();
        if (nNext >= 0) {
            linea_load_tile<D>(Ks + (buf ^ 1) * BN * LD, kb, nNext, BN, S, kStride);
            linea_load_tile<D>(Vs + (buf ^ 1) * BN * LD, vb, nNext, BN, S, kStride);
            linea_cp_commit();
        }
        const unsigned short* Kt = Ks + buf * BN * LD;
        const unsigned short* Vt = Vs + buf * BN * LD;
        // Skip the math (never a barrier) when the causal mask hides the tile from all of this warp's rows, or
        // this warp's own query block drops its key block.
        const bool active = warpRows && !(causal && n0 > warpPosHi) && (!perWarp || warpMask[cb] != 0);
        const bool needMask = (n0 + BN > S) || (causal && n0 + BN - 1 > warpPosLo);
        auto body = [&](auto maskTag) {
            constexpr bool kMask = decltype(maskTag)::value;
            float s[WM][SN][4];
#pragma unroll
            for (int mi = 0; mi < WM; ++mi)
#pragma unroll
                for (int nt = 0; nt < SN; ++nt) s[mi][nt][0] = s[mi][nt][1] = s[mi][nt][2] = s[mi][nt][3] = 0.f;
#pragma unroll
            for (int ks = 0; ks < KS; ++ks) {
                unsigned qa[WM][4];
#pragma unroll
                for (int mi = 0; mi < WM; ++mi) linea_ldmatrix_x4(qa[mi], qLane + mi * 16 * LD + ks * 16);
#pragma unroll
                for (int nt = 0; nt < SN; nt += 2) {
                    unsigned kf[4];
                    linea_ldmatrix_x4(kf, Kt + ((nt + (mat >> 1)) * 8 + r8) * LD + ks * 16 + (mat & 1) * 8);
#pragma unroll
                    for (int mi = 0; mi < WM; ++mi) {
                        linea_mma<F16>(s[mi][nt], qa[mi], kf[0], kf[1]);
                        linea_mma<F16>(s[mi][nt + 1], qa[mi], kf[2], kf[3]);
                    }
                }
            }
            if (kMask) {  // keys past S and (causal) after the row's position; the block mask is uniform over the tile
#pragma unroll
                for (int mi = 0; mi < WM; ++mi)
#pragma unroll
                    for (int nt = 0; nt < SN; ++nt)
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            const int j = n0 + nt * 8 + 2 * t + (e & 1);
                            const int pos = pos0 + mi * 16 + (e >> 1) * 8;
                            if (j >= S || (causal && j > pos)) s[mi][nt][e] = LINEA_NEG_INF;
                        }
            }
            linea_mma_softmax<WM, SN, NT>(s, mRow, lRow, acc, scale_log2);
            linea_mma_pv<WM, SN, NT, BN, LD, F16>(s, Vt, mat, r8, acc);
        };
        if (active) {
            if (needMask) body(linea_bool<true>()); else body(linea_bool<false>());
        }
        n0 = nNext;
    }

    linea_mma_store<WM, NT, D>(acc, mRow, lRow, m0 + rowW, g, t, T, Hq, h, b, o, lse, out_mode);
}

#define LINEA_BSM_PARAMS const unsigned short* q, const unsigned short* k, const unsigned short* v, const unsigned char* mask, \
    void* o, float* lse, int T, int S, int Hq, int Hkv, int bm, int bn, int maskB, int maskH, int KB, float scale_log2, int causal, int out_mode
#define LINEA_BSM_ARGS q, k, v, mask, o, lse, T, S, Hq, Hkv, bm, bn, maskB, maskH, KB, scale_log2, causal, out_mode

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_bsparse_mma_bf16_d64)
extern "C" __global__ void __launch_bounds__(32 * LINEA_BSM_NW) linea_attn_bsparse_mma_bf16_d64(LINEA_BSM_PARAMS) {
    linea_attn_bsm<64, false>(LINEA_BSM_ARGS);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_bsparse_mma_bf16_d128)
extern "C" __global__ void __launch_bounds__(32 * LINEA_BSM_NW) linea_attn_bsparse_mma_bf16_d128(LINEA_BSM_PARAMS) {
    linea_attn_bsm<128, false>(LINEA_BSM_ARGS);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_bsparse_mma_f16_d64)
extern "C" __global__ void __launch_bounds__(32 * LINEA_BSM_NW) linea_attn_bsparse_mma_f16_d64(LINEA_BSM_PARAMS) {
    linea_attn_bsm<64, true>(LINEA_BSM_ARGS);
}
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_attn_bsparse_mma_f16_d128)
extern "C" __global__ void __launch_bounds__(32 * LINEA_BSM_NW) linea_attn_bsparse_mma_f16_d128(LINEA_BSM_PARAMS) {
    linea_attn_bsm<128, true>(LINEA_BSM_ARGS);
}
#endif
