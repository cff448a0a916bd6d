// Linea: the delta rules' end-state pass of segmented runs.
// linea-nvrtc-variant: gva -DLINEA_GVA=1  (grouped value heads, HV > H: chunked_common.cuh)
#include "chunked_delta.cuh"

// The delta rules' end-state pass of segmented runs: one block of 4 warps per (64 state columns, head, b * P + p)
// walks segment p from a zero state. Blocks x < V / 64 own columns 64 x .. of the state and store them as E
// (seg_state [B*P,H,K,V]); blocks x >= V / 64 walk columns 64 (x - V / 64) .. of the identity with u = 0 and store
// them as M (seg_trans [B*P,H,K,K]). The last segment's blocks return at once (its end state is not needed), and so do
// segment 0's transition blocks without an initial state h0 (M_0 multiplies h0 only).
// Transposed, so that both products of a chunk take their left operand from registers and no warp waits for another
// within a chunk: warp w keeps S^T for its 16 columns (16 x K fp32 accumulators) and, per chunk,
//   U^T = u^T - S^T w^T                                      (A: S^T split hi + lo; B: the w tile)
//   S^T <- e^{G_last} S^T + (U^T diag(e^{G_last - G_j})) k   (A: the decayed U^T split hi + lo; B: the k tile)
// The tiles (k, w and, in E blocks, u) arrive by cp.async one chunk ahead; one block barrier per chunk. About 103 KB of
// shared memory at K = 128 and at most 255 registers, so two blocks share an SM.
template <int K, bool GATED>
__device__ __forceinline__ void lc_chunk_end_delta(
    const lc_bf16* __restrict__ k, const float* __restrict__ u, const lc_bf16* __restrict__ w,
    const float* __restrict__ g, int gate_mode, const float* __restrict__ h0, int T, int H, int group, int V, int seg_chunks,
    float* __restrict__ seg_state, float* __restrict__ seg_trans)
{
    constexpr int C = 64, BV = 64, LK = K + 8, LU = BV + 4, KN = K / 8;
    extern __shared__ uint4 lc_smem4[];
    lc_bf16* Ks = (lc_bf16*)lc_smem4;       // [2][C][LK]
    lc_bf16* Ws = Ks + 2 * C * LK;          // [2][C][LK]
    float* Us = (float*)(Ws + 2 * C * LK);  // [2][C][LU] (E blocks)
    float* Dall = Us + 2 * C * LU;          // [4][C] e^{G_last - G_j} (gdelta), one copy per warp
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const int mat = lane >> 3, r8 = lane & 7;
    const int NC = (T + C - 1) / C, P = (NC + seg_chunks - 1) / seg_chunks;
    const bool trans = (int)blockIdx.x >= V / BV;  // a transition block
    const int v0 = (trans ? blockIdx.x - V / BV : blockIdx.x) * BV, h = blockIdx.y, b = blockIdx.z / P,
              p = blockIdx.z - b * P;
    if (p == P - 1 || (trans && p == 0 && !h0)) return;
    const int cBegin = p * seg_chunks, cEnd = min(NC, cBegin + seg_chunks);
    // w and u hold H heads; k holds H / group under LINEA_GVA (value head h reads k head hk = h / group), else H.
    const int hk = LINEA_GVA ? h / group : h;
    const long wStride = (long)H * K, kStride = LINEA_GVA ? (long)(H / group) * K : wStride, vStride = (long)H * V;
    const lc_bf16* kb = k + (long)b * T * kStride + (long)hk * K;
    const lc_bf16* wb = w + (long)b * T * wStride + (long)h * K;
    const float* ub = u + (long)b * T * vStride + (long)h * V + v0;
    float* D = Dall + warp * C;
    const int col0 = 16 * warp;  // the warp's columns col0 .. col0 + 15 of the block's 64
    const unsigned sK = lc_smem_addr(Ks), sW = lc_smem_addr(Ws);
    const unsigned wOff = ((mat >> 1) * 8 * LK + r8 * LK + (mat & 1) * 8) * 2;  // B = w^T (keys x tokens), [C][LK] tile
    const unsigned kOff = lc_b_off(LK, lane);                                     // B = k (tokens x keys), [C][LK] tile
    auto load = [&](int c, int buf) {
        lc_load_tile<K, lc_bf16, 128>(Ks + buf * C * LK, kb, c * C, T, kStride);
        lc_load_tile<K, lc_bf16, 128>(Ws + buf * C * LK, wb, c * C, T, wStride);
        if (!trans) lc_load_tile<BV, float, 128>(Us + buf * C * LU, ub, c * C, T, vStride);
        lc_cp_commit();
    };
    // St[n][e] = S[key 8 n + 2 tq + (e & 1)][column col0 + gq + 8 (e >> 1)]: zero, or the identity's columns.
    float St[KN][4];
#pragma unroll
    for (int n = 0; n < KN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e)
            St[n][e] = trans && 8 * n + 2 * tq + (e & 1) == v0 + col0 + gq + 8 * (e >> 1) ? 1.f : 0.f;
    load(cBegin, cBegin & 1);
    float gn0 = GATED ? lc_gate(g, gate_mode, b, h, cBegin * C + 2 * lane, T, H) : 0.f;
    float gn1 = GATED ? lc_gate(g, gate_mode, b, h, cBegin * C + 2 * lane + 1, T, H) : 0.f;

    for (int c = cBegin; c < cEnd; ++c) {
        const int buf = c & 1;
        lc_cp_wait<0>();
        __syncthreads();  // the tiles of chunk c are in; every warp is done with those of chunk c - 1
        if (c + 1 < cEnd) load(c + 1, buf ^ 1);
        float last = 1.f;  // e^{G_last}
        if (GATED) {
            // Inclusive cumulative log2 gates of this lane's tokens 2 lane, 2 lane + 1, and the decays to the chunk end.
            const float g0 = gn0 * 1.4426950408889634f, g1 = gn1 * 1.4426950408889634f;
            if (c + 1 < cEnd) {
                gn0 = lc_gate(g, gate_mode, b, h, (c + 1) * C + 2 * lane, T, H);
                gn1 = lc_gate(g, gate_mode, b, h, (c + 1) * C + 2 * lane + 1, T, H);
            }
            float s = g0 + g1;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const float n = __shfl_up_sync(0xffffffffu, s, o);
                if (lane >= o) s += n;
            }
            const float Glast = __shfl_sync(0xffffffffu, s, 31);
            *(float2*)(D + 2 * lane) = make_float2(lc_ex2(Glast - (s - g1)), lc_ex2(Glast - s));
            __syncwarp();
            last = lc_ex2(Glast);
        }
        const unsigned sWt = sW + buf * C * LK * 2, sKt = sK + buf * C * LK * 2;
        // X = S^T w^T: 16 columns x 64 tokens (8 n-tiles of tokens).
        float Ut[8][4];
#pragma unroll
        for (int n = 0; n < 8; ++n) Ut[n][0] = Ut[n][1] = Ut[n][2] = Ut[n][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < K / 16; ++ks) {
            unsigned ah[4], al[4];
            lc_split_a(St[2 * ks], St[2 * ks + 1], ah, al);
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                unsigned bw[4];
                lc_ldsm(bw, sWt + wOff + (np * 16 * LK + ks * 16) * 2);
                lc_mma2(Ut[2 * np], Ut[2 * np + 1], ah, bw);
                lc_mma2(Ut[2 * np], Ut[2 * np + 1], al, bw);
            }
        }
        // U^T = u^T - X (transition blocks: u = 0), times e^{G_last - G_j} per token j with a decay.
        const float* Ub = Us + buf * C * LU;
#pragma unroll
        for (int n = 0; n < 8; ++n) {
            const int j = 8 * n + 2 * tq;
            const float2 d = GATED ? *(const float2*)(D + j) : make_float2(1.f, 1.f);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int col = col0 + gq + 8 * (e >> 1);
                const float x = (trans ? 0.f : Ub[(j + (e & 1)) * LU + col]) - Ut[n][e];
                Ut[n][e] = GATED ? x * ((e & 1) ? d.y : d.x) : x;
            }
        }
        if (GATED) {
#pragma unroll
            for (int n = 0; n < KN; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) St[n][e] *= last;
        }
        lc_st_update<K>(St, Ut, sKt, kOff);  // S^T += U^T k
    }
    const int ld = trans ? K : V;  // row stride of what is stored: M [K,K] or E [K,V]
    lc_st_store<K>((trans ? seg_trans : seg_state) + ((long)(b * P + p) * H + h) * K * ld + v0 + col0 + gq, ld, St, tq);
}

#define lc_chunk_end_delta_ARGS                                                                                        \
    const lc_bf16 *k, const float *u, const lc_bf16 *w, const float *g, int gate_mode, const float *h0, int T, int H, \
        int group, int V, int seg_chunks, float *seg_state, float *seg_trans
#define lc_chunk_end_delta_CALL k, u, w, g, gate_mode, h0, T, H, group, V, seg_chunks, seg_state, seg_trans

LC_DELTA_ENTRY(linea_chunk_end_k64_delta, lc_chunk_end_delta, 64, false)
LC_DELTA_ENTRY(linea_chunk_end_k64_gdelta, lc_chunk_end_delta, 64, true)
LC_DELTA_ENTRY(linea_chunk_end_k128_delta, lc_chunk_end_delta, 128, false)
LC_DELTA_ENTRY(linea_chunk_end_k128_gdelta, lc_chunk_end_delta, 128, true)
