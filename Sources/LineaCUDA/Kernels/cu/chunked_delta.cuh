// What the delta rules' transposed kernels share (chunked_delta_fwd.cu, chunked_delta_end.cu; the method is in
// chunked_scalar.cuh's overview).
#pragma once
#include "chunked_common.cuh"

// The transposed delta kernels (lc_chunk_fwd_delta, lc_chunk_end_delta) keep S^T for a warp's 16 columns as K / 8 fp32
// accumulator n-tiles St[n][e] = S[key 8 n + 2 tq + (e & 1)][column gq + 8 (e >> 1)]; two adjacent n-tiles make one
// A fragment. lc_st_update: S^T += U^T k, with U^T (16 columns x 64 tokens, 8 n-tiles) split hi + lo into A fragments
// and k, a [64][K + 8] bf16 tile at shared address sKt (kOff = lc_b_off(K + 8, lane)), as B. 128 MMAs at K = 128.
template <int K>
__device__ __forceinline__ void lc_st_update(float (*St)[4], float (*Ut)[4], unsigned sKt, unsigned kOff) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
        unsigned ah[4], al[4];
        lc_split_a(Ut[2 * kk], Ut[2 * kk + 1], ah, al);
#pragma unroll
        for (int np = 0; np < K / 16; ++np) {
            unsigned bk[4];
            lc_ldsm_b(bk, sKt, K + 8, kk * 16, np * 16, kOff);
            lc_mma2(St[2 * np], St[2 * np + 1], ah, bk);
            lc_mma2(St[2 * np], St[2 * np + 1], al, bk);
        }
    }
}
// Stores S^T into a [K, ld] fp32 matrix; `out` points at the lane's column gq of the warp's 16 (row 0).
template <int K>
__device__ __forceinline__ void lc_st_store(float* out, int ld, const float (*St)[4], int tq) {
#pragma unroll
    for (int n = 0; n < K / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) out[(long)(8 * n + 2 * tq + (e & 1)) * ld + 8 * (e >> 1)] = St[n][e];
}

// Stores a transposed walk's outputs of one chunk: Ot[n][e] = o[token 8 n + 2 tq + (e & 1)][column gq + 8 (e >> 1)] of
// the warp's 16 columns, `first` the chunk's first token, `at` the offset of its row and of the warp's column gq & ~1.
// Lanes gq and gq ^ 1 trade one value of each pair so that a lane holds two adjacent columns of one token (one 4-byte
// bf16 pair or one float2 store); tokens from T on are not written.
__device__ __forceinline__ void lc_store_ot(const float (*Ot)[4], void* o, int out_bf16, long at, long stride, int first,
                                            int T, int gq, int tq) {
    const int odd = gq & 1;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
        const int tc = 8 * n + 2 * tq + odd;  // token within the chunk
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const float lo = Ot[n][2 * hh], hi = Ot[n][2 * hh + 1];  // tokens 2 tq, 2 tq + 1 of column gq
            const float other = __shfl_xor_sync(0xffffffffu, odd ? lo : hi, 4);
            const float x0 = odd ? other : lo, x1 = odd ? hi : other;
            if (first + tc >= T) continue;
            const long to = at + (long)tc * stride + 8 * hh;
            if (out_bf16) *(unsigned*)((lc_bf16*)o + to) = lc_pack(x0, x1);
            else *(float2*)((float*)o + to) = make_float2(x0, x1);
        }
    }
}

// Entries linea_chunk_{fwd,end}_k{K}_{delta,gdelta} of the delta rules (4 warps, two blocks per SM), one line each as
// LC_CHUNK_ENTRY's.
#define LC_DELTA_ENTRY(NAME, KERNEL, K, GATED)                                                                        \
    extern "C" __global__ void __launch_bounds__(128, 2) NAME(KERNEL##_ARGS) { KERNEL<K, GATED>(KERNEL##_CALL); }
