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

// Entries linea_chunk_{fwd,end}_k{K}_{delta,gdelta} of the delta rules (4 warps, two blocks per SM), one line each as
// LC_CHUNK_ENTRY's.
#define LC_DELTA_ENTRY(NAME, KERNEL, K, GATED)                                                                        \
    extern "C" __global__ void __launch_bounds__(128, 2) NAME(KERNEL##_ARGS) { KERNEL<K, GATED>(KERNEL##_CALL); }
