// Linea: the delta rules' WY prepass (chunked_scalar.cuh's overview).
// linea-nvrtc-variant: gva -DLINEA_GVA=1  (grouped value heads, HV > H: chunked_common.cuh)
#include "chunked_common.cuh"

// Delta-rule prepass for one chunk of value head h: w = A (beta e^G k) [C,K], u = A (beta v) [C,V], A = (I + L)^{-1}.
template <int K, int VD>
__device__ __forceinline__ void lc_chunk_wy(
    const lc_bf16* __restrict__ k, const lc_bf16* __restrict__ v, const float* __restrict__ beta,
    const float* __restrict__ g, int gate_mode, lc_bf16* __restrict__ w, float* __restrict__ u, int T, int H, int group)
{
    constexpr int C = 64, LK = K + 8, LVV = VD + 8, LA = C + 4;
    extern __shared__ uint4 lc_smem4[];
    lc_bf16* Ks = (lc_bf16*)lc_smem4;      // [C][LK]
    lc_bf16* Vs = Ks + C * LK;             // [C][LVV]
    float* L = (float*)(Vs + C * LVV);     // [C][LA]
    float* A = L;                          // [C][LA], written over L block by block (4 blocks/SM)
    float* G = L + C * LA;                 // [C]
    float* Bt = G + C;                     // [C] beta
    float* Fw = Bt + C;                    // [C] beta e^G (the column factors of w)
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const int mat = lane >> 3, r8 = lane & 7;
    const int c = blockIdx.x, h = blockIdx.y, b = blockIdx.z, t0 = c * C;
    // v, w and u hold H heads; k holds H / group under LINEA_GVA (value head h reads k head hk = h / group), else H.
    const int hk = LINEA_GVA ? h / group : h;
    const long wStride = (long)H * K, kStride = LINEA_GVA ? (long)(H / group) * K : wStride, vStride = (long)H * VD;
    lc_load_tile<K, lc_bf16, 128>(Ks, k + (long)b * T * kStride + (long)hk * K, t0, T, kStride);
    lc_load_tile<VD, lc_bf16, 128>(Vs, v + (long)b * T * vStride + (long)h * VD, t0, T, vStride);
    lc_cp_commit();
    if (warp == 0) {
        lc_cumsum(lc_gate(g, gate_mode, b, h, t0 + 2 * lane, T, H), lc_gate(g, gate_mode, b, h, t0 + 2 * lane + 1, T, H), G, lane);
    } else if (warp == 1) {
        for (int i = lane; i < C; i += 32) Bt[i] = t0 + i < T ? beta[((long)b * T + t0 + i) * H + h] : 0.f;
    }
    lc_cp_wait<0>();
    __syncthreads();
    if (tid < C) Fw[tid] = Bt[tid] * __expf(G[tid]);  // read after the next barrier
    // L = strictly lower part of beta_i e^{G_i - G_j} k_i.k_j, rows 16*warp ..
    {
        const int r0 = 16 * warp;
        const unsigned sKs = lc_smem_addr(Ks);
        const unsigned aAt = sKs + ((r0 + (mat & 1) * 8 + r8) * LK + (mat >> 1) * 8) * 2;
        const unsigned bAt = sKs + (((mat >> 1) * 8 + r8) * LK + (mat & 1) * 8) * 2;
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < K / 16; ++ks) {
            unsigned a[4];
            lc_ldsm(a, aAt + ks * 32);
#pragma unroll
            for (int nt = 0; nt < 8; nt += 2) {
                unsigned kf[4];
                lc_ldsm(kf, bAt + (nt * 8 * LK + ks * 16) * 2);
                lc_mma2(s[nt], s[nt + 1], a, kf);
            }
        }
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int i = r0 + gq + 8 * (e >> 1), j = nt * 8 + 2 * tq + (e & 1);
                L[i * LA + j] = j < i ? Bt[i] * __expf(G[i] - G[j]) * s[nt][e] : 0.f;
            }
    }
    __syncwarp();  // until the first block barrier, warp r touches only its own rows r0 .. r0 + 15 of L and A
    // A = (I + L)^{-1}, blocked by 16 (A_rj, r >= j: 16 x 16 blocks; warp r makes block row r, written over L's).
    // Diagonal: A_rr = (I + L_rr)^{-1} by forward substitution in fp32, lane l solving column l & 15.
    {
        const int r0 = 16 * warp, j = lane & 15;
        float* D = L + r0 * LA + r0;
        float a[16];
#pragma unroll
        for (int i = 0; i < 16; ++i) {
            float s0 = 0.f, s1 = 0.f;
#pragma unroll
            for (int m = 0; m + 1 < i; m += 2) {
                const float2 l = *(const float2*)(D + i * LA + m);
                s0 = fmaf(l.x, a[m], s0);
                s1 = fmaf(l.y, a[m + 1], s1);
            }
            if (i & 1) s0 = fmaf(D[i * LA + i - 1], a[i - 1], s0);
            a[i] = i < j ? 0.f : i == j ? 1.f : -(s0 + s1);
        }
        __syncwarp();  // the warp is done reading L_rr
        if (lane < 16) {
#pragma unroll
            for (int i = 0; i < 16; ++i) D[i * LA + j] = a[i];
        }
        __syncwarp();
    }
    // Off the diagonal: (I + L) A = I gives A_rj = -sum_{m=j}^{r-1} Z_rm A_mj with Z_rm = A_rr L_rm, by 16 x 16
    // products on hi + lo bf16 operands (three passes, ~16 significant bits, as A's in the products below). Z first
    // (warp r reads only its own rows), then one block barrier per distance d = r - j, so that A_mj (m - j < d) is in.
    {
        const int r0 = 16 * warp;
        unsigned zh[3][4], zl[3][4];
        unsigned dh[4], dl[4];
        lc_frag_a32(L + r0 * LA + r0, LA, lane, dh, dl);
#pragma unroll
        for (int m = 0; m < 3; ++m) {
            if (m >= warp) break;
            float z[2][4] = {};
            unsigned bh[4], bl[4];
            lc_frag_b32(L + r0 * LA + 16 * m, LA, lane, bh, bl);
            lc_mma2_x3(z[0], z[1], dh, dl, bh, bl);
            lc_split_a(z[0], z[1], zh[m], zl[m]);
        }
        __syncthreads();  // every diagonal block of A is in
#pragma unroll
        for (int d = 1; d < 4; ++d) {
            if (warp >= d) {
                const int j = warp - d;
                float acc[2][4] = {};
#pragma unroll
                for (int m = 0; m < 3; ++m) {
                    if (m < j || m >= warp) continue;
                    unsigned bh[4], bl[4];
                    lc_frag_b32(L + 16 * m * LA + 16 * j, LA, lane, bh, bl);
                    lc_mma2_x3(acc[0], acc[1], zh[m], zl[m], bh, bl);
                }
#pragma unroll
                for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                    for (int r = 0; r < 2; ++r)
                        *(float2*)(L + (r0 + gq + 8 * r) * LA + 16 * j + 8 * nt + 2 * tq) =
                            make_float2(-acc[nt][2 * r], -acc[nt][2 * r + 1]);
            }
            __syncthreads();
        }
    }
    // Rows 16*warp .. of A diag(f) (f = beta e^G for w, beta for u; hi + lo bf16 A fragments) times the k or v tile.
    const int r0 = 16 * warp;
    auto product = [&](const lc_bf16* X, int ldx, auto nTag, auto fp32Tag, void* out, long stride, bool gated) {
        constexpr int N = decltype(nTag)::value;
        const unsigned xAt = lc_smem_addr(X) + lc_b_off(ldx, lane);
        float acc[N / 8][4];
#pragma unroll
        for (int nt = 0; nt < N / 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
            if (kk > warp) break;  // A is lower triangular
            unsigned ah[4], al[4];
#pragma unroll
            for (int q4 = 0; q4 < 4; ++q4) {
                const int i = r0 + gq + 8 * (q4 & 1), j = kk * 16 + 2 * tq + 8 * (q4 >> 1);
                const float* f = gated ? Fw : Bt;
                const float f0 = f[j], f1 = f[j + 1];
                lc_split(A[i * LA + j] * f0, A[i * LA + j + 1] * f1, ah[q4], al[q4]);
            }
#pragma unroll
            for (int np = 0; np < N / 16; ++np) {
                unsigned bx[4];
                lc_ldsm_t(bx, xAt + (kk * 16 * ldx + np * 16) * 2);
                lc_mma2(acc[2 * np], acc[2 * np + 1], ah, bx);
                lc_mma2(acc[2 * np], acc[2 * np + 1], al, bx);
            }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int t = t0 + r0 + gq + 8 * r;
            if (t >= T) continue;
#pragma unroll
            for (int nt = 0; nt < N / 8; ++nt) {
                const long at = ((long)b * T + t) * stride + (long)h * N + nt * 8 + 2 * tq;
                if (decltype(fp32Tag)::value) *(float2*)((float*)out + at) = make_float2(acc[nt][2 * r], acc[nt][2 * r + 1]);
                else *(unsigned*)((lc_bf16*)out + at) = lc_pack(acc[nt][2 * r], acc[nt][2 * r + 1]);
            }
        }
    };
    product(Ks, LK, lc_int<K>(), lc_int<0>(), w, wStride, true);
    product(Vs, LVV, lc_int<VD>(), lc_int<1>(), u, vStride, false);
}

extern "C" __global__ void __launch_bounds__(128) linea_chunk_wy_k64_v64(
    const lc_bf16* k, const lc_bf16* v, const float* beta, const float* g, int gate_mode, lc_bf16* w, float* u,
    int T, int H, int group) {
    lc_chunk_wy<64, 64>(k, v, beta, g, gate_mode, w, u, T, H, group);
}
extern "C" __global__ void __launch_bounds__(128) linea_chunk_wy_k64_v128(
    const lc_bf16* k, const lc_bf16* v, const float* beta, const float* g, int gate_mode, lc_bf16* w, float* u,
    int T, int H, int group) {
    lc_chunk_wy<64, 128>(k, v, beta, g, gate_mode, w, u, T, H, group);
}
extern "C" __global__ void __launch_bounds__(128) linea_chunk_wy_k128_v64(
    const lc_bf16* k, const lc_bf16* v, const float* beta, const float* g, int gate_mode, lc_bf16* w, float* u,
    int T, int H, int group) {
    lc_chunk_wy<128, 64>(k, v, beta, g, gate_mode, w, u, T, H, group);
}
extern "C" __global__ void __launch_bounds__(128) linea_chunk_wy_k128_v128(
    const lc_bf16* k, const lc_bf16* v, const float* beta, const float* g, int gate_mode, lc_bf16* w, float* u,
    int T, int H, int group) {
    lc_chunk_wy<128, 128>(k, v, beta, g, gate_mode, w, u, T, H, group);
}
