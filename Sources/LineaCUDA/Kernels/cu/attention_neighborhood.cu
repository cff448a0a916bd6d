// Linea: neighborhood attention forward (NATTEN semantics, CUDA cores, fp32 math); see NeighborhoodOptions for the rules.
// q [B,N,Hq,D], k [B,N,Hkv,D], v [B,N,Hkv,Dv] with N = L0·L1·L2 tokens of a row-major grid (a 1-D or 2-D grid is padded in
// front with axes of length 1, kernel 1); inputs fp32, bf16 or fp16 by in_kind 0/1/2. o [B,N,Hq,Dv] (fp32, bf16, fp16 by
// out_kind), lse [B,N,Hq] fp32 natural log (optional). Per axis a: kernel Ka, stride Sa, dilation Ga, causal bit a of
// causal_bits (bit 0 = axis 0).
// A block is one (tile of up to 64 queries, head, batch): the tile is a box of T0 x T1 x T2 neighboring queries of one
// dilation group (group coordinates x0 .. x0 + Ta - 1 per axis). Windows start and end non-decreasingly with the query,
// so the tile's windows lie in the box of keys [start(first query), end(last query)) per axis, which is walked in key
// tiles of 32 (row-major over the box), K and V staged in shared memory. 256 threads = 8 warps of 8 query rows, one key
// per lane; a pair outside the query's window is masked; a warp skips a key tile none of its rows sees. Online softmax
// in base 2 (q is pre-scaled by scale·log2 e). Never forms a score matrix: O(box) keys per tile of queries.
// Dynamic shared memory (floats): Qs[64][D4] + Kt[D4][33] + Vs[32][Dv] + Ps[64][32], then ints Win[64][6] + Tok[64] +
// KTok[32], D4 = D rounded up to 4.
#define LINEA_NA_ROWS 64
#define LINEA_NA_KEYS 32
// With -DLINEA_SELECT -DLINEA_ONLY_<entry>, only that entry is compiled (first use compiles one, not all).
#define LINEA_NEG_INF (__int_as_float(0xff800000))
#include "element_io.cuh"

// Window [start, end) (group coordinates) of the query at group coordinate xi in a dilation group of n tokens, as
// NeighborhoodAxis.window: causal, the stride group's last query is the leader and the window ends at the query;
// otherwise the leader is the stride group's middle and the window, k long, is shifted inside [0, n).
__device__ __forceinline__ void linea_na_window(int xi, int n, int k, int s, int causal, int& start, int& end) {
    if (causal) {
        const int leader = min(xi / s * s + s - 1, n - 1);
        start = max(leader - k + 1, 0);
        end = xi + 1;
    } else {
        const int leader = min(xi / s * s + s / 2, n - 1);
        start = min(max(leader - k / 2, 0), n - k);
        end = start + k;
    }
}

template <int NC>
__device__ __forceinline__ void linea_natten(
    const void* __restrict__ q, const void* __restrict__ k, const void* __restrict__ v, int in_kind,
    void* __restrict__ o, float* __restrict__ lse, int out_kind, int Hq, int Hkv, int D, int Dv,
    int L0, int L1, int L2, int K0, int K1, int K2, int S0, int S1, int S2, int G0, int G1, int G2, int causal_bits,
    int T0, int T1, int T2, int NT0, int NT1, int NT2, float scale_log2)
{
    extern __shared__ float linea_smem[];
    const int D4 = (D + 3) & ~3;
    float* Qs = linea_smem;                                // [64][D4], scaled by scale·log2 e
    float* Kt = Qs + LINEA_NA_ROWS * D4;                   // [D4][33]: key j's element d at d·33 + j
    float* Vs = Kt + D4 * (LINEA_NA_KEYS + 1);             // [32][Dv]
    float* Ps = Vs + LINEA_NA_KEYS * Dv;                   // [64][32]: probabilities of the current key tile
    int* Win = (int*)(Ps + LINEA_NA_ROWS * LINEA_NA_KEYS); // [64][6]: per axis window start, end (empty: invalid row)
    int* Tok = Win + LINEA_NA_ROWS * 6;                    // [64]: the query's token, -1 for none
    int* KTok = Tok + LINEA_NA_ROWS;                       // [32]: the key tile's tokens, -1 past the box

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int h = blockIdx.y, b = blockIdx.z, hk = h / (Hq / Hkv);
    const int L[3] = {L0, L1, L2}, KS[3] = {K0, K1, K2}, ST[3] = {S0, S1, S2}, DL[3] = {G0, G1, G2};
    const int TL[3] = {T0, T1, T2}, NT[3] = {NT0, NT1, NT2};
    const long N = (long)L0 * L1 * L2;

    // This block's tile: blockIdx.x runs over axis 2 fastest; along axis a, DL[a] groups of NT[a] tiles each.
    int g[3], x0[3], n[3], bs[3], nb[3];
    int t = blockIdx.x;
#pragma unroll
    for (int a = 2; a >= 0; --a) {
        const int per = DL[a] * NT[a];
        const int ti = t % per;
        t /= per;
        g[a] = ti / NT[a];
        x0[a] = (ti % NT[a]) * TL[a];
        n[a] = (L[a] - g[a] + DL[a] - 1) / DL[a];
    }
    if (x0[0] >= n[0] || x0[1] >= n[1] || x0[2] >= n[2]) return;  // a shorter group's missing last tile (block-uniform)
    int total = 1;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
        const int ca = (causal_bits >> a) & 1, x1 = min(x0[a] + TL[a], n[a]) - 1;
        int s0, e0, s1, e1;
        linea_na_window(x0[a], n[a], KS[a], ST[a], ca, s0, e0);
        linea_na_window(x1, n[a], KS[a], ST[a], ca, s1, e1);
        bs[a] = s0;
        nb[a] = e1 - s0;
        total *= nb[a];
    }

    // Rows: the tile's queries, row-major over T0 x T1 x T2.
    if (tid < LINEA_NA_ROWS) {
        const int r = tid, c2 = r % T2, c1 = (r / T2) % T1, c0 = r / (T2 * T1);
        const int c[3] = {c0, c1, c2};
        bool valid = c0 < T0;
        int real[3];
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            const int xi = x0[a] + c[a];
            valid = valid && xi < n[a];
            int s, e;
            linea_na_window(min(xi, n[a] - 1), n[a], KS[a], ST[a], (causal_bits >> a) & 1, s, e);
            Win[r * 6 + 2 * a] = valid ? s : 0;
            Win[r * 6 + 2 * a + 1] = valid ? e : 0;
            real[a] = g[a] + xi * DL[a];
        }
        // An invalid row's empty windows mask every key (its later entries may hold a valid window: the test needs all axes).
        if (!valid) { Win[r * 6] = 0; Win[r * 6 + 1] = 0; }
        Tok[r] = valid ? (real[0] * L1 + real[1]) * L2 + real[2] : -1;
    }
    __syncthreads();
    for (int idx = tid; idx < LINEA_NA_ROWS * D4; idx += blockDim.x) {
        const int r = idx / D4, d = idx - r * D4, tok = Tok[r];
        Qs[idx] = (tok >= 0 && d < D) ? ld_kind(q, (((long)b * N + tok) * Hq + h) * D + d, in_kind) * scale_log2 : 0.f;
    }

    float m[8], l[8], acc[8][NC];
#pragma unroll
    for (int r = 0; r < 8; ++r) {
        m[r] = LINEA_NEG_INF; l[r] = 0.f;
#pragma unroll
        for (int c = 0; c < NC; ++c) acc[r][c] = 0.f;
    }
    const int row0 = warp * 8;
    for (int n0 = 0; n0 < total; n0 += LINEA_NA_KEYS) {
        // The key tile's tokens, then K (transposed) and V; keys past the box are zeros (0 · garbage could be NaN).
        if (tid < LINEA_NA_KEYS) {
            const int j = n0 + tid;
            int tok = -1;
            if (j < total) {
                const int c2 = j % nb[2], c1 = (j / nb[2]) % nb[1], c0 = j / (nb[2] * nb[1]);
                const int r0 = g[0] + (bs[0] + c0) * DL[0], r1 = g[1] + (bs[1] + c1) * DL[1], r2 = g[2] + (bs[2] + c2) * DL[2];
                tok = (r0 * L1 + r1) * L2 + r2;
            }
            KTok[tid] = tok;
        }
        __syncthreads();
        for (int idx = tid; idx < LINEA_NA_KEYS * D4; idx += blockDim.x) {
            const int j = idx / D4, d = idx - j * D4, tok = KTok[j];
            Kt[d * (LINEA_NA_KEYS + 1) + j] = (tok >= 0 && d < D) ? ld_kind(k, (((long)b * N + tok) * Hkv + hk) * D + d, in_kind) : 0.f;
        }
        for (int idx = tid; idx < LINEA_NA_KEYS * Dv; idx += blockDim.x) {
            const int j = idx / Dv, e = idx - j * Dv, tok = KTok[j];
            Vs[idx] = tok >= 0 ? ld_kind(v, (((long)b * N + tok) * Hkv + hk) * Dv + e, in_kind) : 0.f;
        }
        __syncthreads();

        // Which of the warp's rows see this lane's key (group coordinates against each row's window).
        const int j = n0 + lane;
        unsigned int seen = 0;
        if (j < total) {
            const int y2 = bs[2] + j % nb[2], y1 = bs[1] + (j / nb[2]) % nb[1], y0 = bs[0] + j / (nb[2] * nb[1]);
#pragma unroll
            for (int r = 0; r < 8; ++r) {
                const int* w = Win + (row0 + r) * 6;
                const bool in = y0 >= w[0] && y0 < w[1] && y1 >= w[2] && y1 < w[3] && y2 >= w[4] && y2 < w[5];
                seen |= (in ? 1u : 0u) << r;
            }
        }
        if (__any_sync(0xffffffffu, seen != 0)) {  // warp-uniform
            float s[8];
#pragma unroll
            for (int r = 0; r < 8; ++r) s[r] = 0.f;
            for (int d = 0; d < D4; d += 4) {
                const float k0 = Kt[d * (LINEA_NA_KEYS + 1) + lane], k1 = Kt[(d + 1) * (LINEA_NA_KEYS + 1) + lane];
                const float k2 = Kt[(d + 2) * (LINEA_NA_KEYS + 1) + lane], k3 = Kt[(d + 3) * (LINEA_NA_KEYS + 1) + lane];
#pragma unroll
                for (int r = 0; r < 8; ++r) {
                    const float4 qv = *(const float4*)(Qs + (row0 + r) * D4 + d);
                    s[r] = fmaf(qv.x, k0, fmaf(qv.y, k1, fmaf(qv.z, k2, fmaf(qv.w, k3, s[r]))));
                }
            }
#pragma unroll
            for (int r = 0; r < 8; ++r) {
                const float sr = ((seen >> r) & 1u) ? s[r] : LINEA_NEG_INF;
                float mt = sr;
#pragma unroll
                for (int off = 16; off > 0; off >>= 1) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, off));
                const float mNew = fmaxf(m[r], mt);
                float p = 0.f, alpha = 1.f;
                if (mNew != LINEA_NEG_INF) {  // warp-uniform; else the row has seen nothing yet and stays as it is
                    alpha = exp2f(m[r] - mNew);
                    p = exp2f(sr - mNew);
                }
                float ps = p;
#pragma unroll
                for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
                l[r] = l[r] * alpha + ps;
                m[r] = mNew;
#pragma unroll
                for (int c = 0; c < NC; ++c) acc[r][c] *= alpha;
                Ps[(row0 + r) * LINEA_NA_KEYS + lane] = p;
            }
            __syncwarp();
            // O += P V: each V element read once for the warp's 8 rows, the probabilities as float4 broadcasts.
#pragma unroll 2
            for (int jj = 0; jj < LINEA_NA_KEYS; jj += 4) {
                float4 pr[8];
#pragma unroll
                for (int r = 0; r < 8; ++r) pr[r] = *(const float4*)(Ps + (row0 + r) * LINEA_NA_KEYS + jj);
#pragma unroll
                for (int c = 0; c < NC; ++c) {
                    const int e = lane + 32 * c;
                    if (e < Dv) {
                        const float v0 = Vs[jj * Dv + e], v1 = Vs[(jj + 1) * Dv + e];
                        const float v2 = Vs[(jj + 2) * Dv + e], v3 = Vs[(jj + 3) * Dv + e];
#pragma unroll
                        for (int r = 0; r < 8; ++r)
                            acc[r][c] = fmaf(pr[r].x, v0, fmaf(pr[r].y, v1, fmaf(pr[r].z, v2, fmaf(pr[r].w, v3, acc[r][c]))));
                    }
                }
            }
        }
        __syncthreads();  // before the next tile overwrites KTok, Kt, Vs (and this warp's Ps)
    }

#pragma unroll
    for (int r = 0; r < 8; ++r) {
        const int tok = Tok[row0 + r];
        if (tok < 0) continue;  // warp-uniform
        const long base = (((long)b * N + tok) * Hq + h) * Dv;
        const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            const int e = lane + 32 * c;
            if (e < Dv) st_kind(o, base + e, out_kind, acc[r][c] * inv);
        }
        if (lane == 0 && lse != 0)
            lse[((long)b * N + tok) * Hq + h] = l[r] > 0.f ? (m[r] + log2f(l[r])) * 0.69314718055994531f : LINEA_NEG_INF;
    }
}

#define LINEA_NA_PARAMS const void* q, const void* k, const void* v, int in_kind, void* o, float* lse, int out_kind, \
    int Hq, int Hkv, int D, int Dv, int L0, int L1, int L2, int K0, int K1, int K2, int S0, int S1, int S2, \
    int G0, int G1, int G2, int causal_bits, int T0, int T1, int T2, int NT0, int NT1, int NT2, float scale_log2
#define LINEA_NA_ARGS q, k, v, in_kind, o, lse, out_kind, Hq, Hkv, D, Dv, L0, L1, L2, K0, K1, K2, S0, S1, S2, \
    G0, G1, G2, causal_bits, T0, T1, T2, NT0, NT1, NT2, scale_log2

// Entries by the largest value head dim Dv handled (64, 128, 256); D (the q/k head dim) is a launch argument, <= 256.
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_natten_d64)
extern "C" __global__ void __launch_bounds__(256) linea_natten_d64(LINEA_NA_PARAMS) { linea_natten<2>(LINEA_NA_ARGS); }
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_natten_d128)
extern "C" __global__ void __launch_bounds__(256) linea_natten_d128(LINEA_NA_PARAMS) { linea_natten<4>(LINEA_NA_ARGS); }
#endif

#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_natten_d256)
extern "C" __global__ void __launch_bounds__(256) linea_natten_d256(LINEA_NA_PARAMS) { linea_natten<8>(LINEA_NA_ARGS); }
#endif

// ---------------------------------------------------------------------------------------------------------------------
// Tensor-core form (sm_80+): bf16 or fp16 q, k, v with D = Dv in {64, 128}, scale > 0. Same tiles and key box as above;
// 4 warps of 16 query rows, key tiles of 64 gathered by token with cp.async into double-buffered shared memory (rows
// padded to D + 8), S = Q Kᵀ and O += P V by mma.sync m16n8k16 with fp32 accumulation (the fragment code of
// attention_mma.cu), the window test per (row, key) on the S accumulators. A warp skips a key tile none of its 16 rows
// sees. Dynamic shared memory: Qs[64][D+8] + Ks[2][64][D+8] + Vs[2][64][D+8] (16-bit), then ints Win[64][6] (start and
// length per axis; length 0 masks everything) + Tok[64] + KY[2][64][4] (group coordinates of the tile's keys).
#include "mma_tiles.cuh"

// Box coordinates of key j (row-major over nb[0] x nb[1] x nb[2]) as group coordinates y; its token; -1 past the box.
__device__ __forceinline__ int linea_na_key(int j, int total, const int* bs, const int* nb, const int* g, const int* DL,
                                            int L1, int L2, int* y) {
    if (j >= total) { y[0] = y[1] = y[2] = -(1 << 30); return -1; }  // a coordinate no window holds
    y[2] = bs[2] + j % nb[2];
    y[1] = bs[1] + (j / nb[2]) % nb[1];
    y[0] = bs[0] + j / (nb[2] * nb[1]);
    return ((g[0] + y[0] * DL[0]) * L1 + (g[1] + y[1] * DL[1])) * L2 + g[2] + y[2] * DL[2];
}

// Gathers the 64 rows of key tile n0 (K and V, D elements each) into dst rows of D + 8, zeros past the box; and the
// keys' group coordinates into ky (threads below 64).
template <int D>
__device__ __forceinline__ void linea_na_gather_kv(unsigned short* kd, unsigned short* vd, int* ky, const unsigned short* kb,
                                                   const unsigned short* vb, long stride, int n0, int total, const int* bs,
                                                   const int* nb, const int* g, const int* DL, int L1, int L2) {
    constexpr int CPR = D / 8;  // 16-byte chunks per row
    for (int c = threadIdx.x; c < 64 * CPR; c += blockDim.x) {
        const int r = c / CPR, cc = c - r * CPR;
        int y[3];
        const int tok = linea_na_key(n0 + r, total, bs, nb, g, DL, L1, L2, y);
        const long off = tok >= 0 ? (long)tok * stride + cc * 8 : 0;
        linea_cp_async16(kd + r * (D + 8) + cc * 8, kb + off, tok >= 0);
        linea_cp_async16(vd + r * (D + 8) + cc * 8, vb + off, tok >= 0);
    }
    if (threadIdx.x < 64) {
        int y[3];
        linea_na_key(n0 + threadIdx.x, total, bs, nb, g, DL, L1, L2, y);
        ky[threadIdx.x * 4] = y[0]; ky[threadIdx.x * 4 + 1] = y[1]; ky[threadIdx.x * 4 + 2] = y[2];
    }
}

template <int D, bool F16>
__device__ __forceinline__ void linea_natten_mma(
    const unsigned short* __restrict__ q, const unsigned short* __restrict__ k, const unsigned short* __restrict__ v,
    void* __restrict__ o, float* __restrict__ lse, int out_kind, int Hq, int Hkv,
    int L0, int L1, int L2, int K0, int K1, int K2, int S0, int S1, int S2, int G0, int G1, int G2, int causal_bits,
    int T0, int T1, int T2, int NT0, int NT1, int NT2, float scale_log2)
{
    constexpr int LD = D + 8, BN = 64, SN = BN / 8, NT = D / 8, KS = D / 16;
    extern __shared__ uint4 linea_smem4[];
    unsigned short* Qs = (unsigned short*)linea_smem4;
    unsigned short* Ks = Qs + 64 * LD;
    unsigned short* Vs = Ks + 2 * BN * LD;
    int* Win = (int*)(Vs + 2 * BN * LD);
    int* Tok = Win + 64 * 6;
    int* KY = Tok + 64;  // [2][64][4]

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, b = blockIdx.z, hk = h / (Hq / Hkv);
    const int L[3] = {L0, L1, L2}, KS_[3] = {K0, K1, K2}, ST[3] = {S0, S1, S2}, DL[3] = {G0, G1, G2};
    const int TL[3] = {T0, T1, T2}, NTl[3] = {NT0, NT1, NT2};
    const long N = (long)L0 * L1 * L2;

    int g[3], x0[3], n[3], bs[3], nb[3];
    int tt = blockIdx.x;
#pragma unroll
    for (int a = 2; a >= 0; --a) {
        const int per = DL[a] * NTl[a];
        const int ti = tt % per;
        tt /= per;
        g[a] = ti / NTl[a];
        x0[a] = (ti % NTl[a]) * TL[a];
        n[a] = (L[a] - g[a] + DL[a] - 1) / DL[a];
    }
    if (x0[0] >= n[0] || x0[1] >= n[1] || x0[2] >= n[2]) return;  // block-uniform, before any barrier
    int total = 1;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
        const int ca = (causal_bits >> a) & 1, x1 = min(x0[a] + TL[a], n[a]) - 1;
        int s0, e0, s1, e1;
        linea_na_window(x0[a], n[a], KS_[a], ST[a], ca, s0, e0);
        linea_na_window(x1, n[a], KS_[a], ST[a], ca, s1, e1);
        bs[a] = s0;
        nb[a] = e1 - s0;
        total *= nb[a];
    }
    if (tid < 64) {
        const int r = tid, c2 = r % T2, c1 = (r / T2) % T1, c0 = r / (T2 * T1);
        const int c[3] = {c0, c1, c2};
        bool valid = c0 < T0;
#pragma unroll
        for (int a = 0; a < 3; ++a) valid = valid && x0[a] + c[a] < n[a];
        int real[3];
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            const int xi = min(x0[a] + c[a], n[a] - 1);
            int s, e;
            linea_na_window(xi, n[a], KS_[a], ST[a], (causal_bits >> a) & 1, s, e);
            Win[r * 6 + 2 * a] = s;
            Win[r * 6 + 2 * a + 1] = valid ? e - s : 0;  // length 0: an invalid row sees nothing
            real[a] = g[a] + xi * DL[a];
        }
        Tok[r] = valid ? (real[0] * L1 + real[1]) * L2 + real[2] : -1;
    }
    __syncthreads();

    const long qStride = (long)Hq * D, kStride = (long)Hkv * D;
    const unsigned short* qb = q + (long)b * N * qStride + (long)h * D;
    const unsigned short* kb = k + (long)b * N * kStride + (long)hk * D;
    const unsigned short* vb = v + (long)b * N * kStride + (long)hk * D;
    for (int c = tid; c < 64 * (D / 8); c += blockDim.x) {
        const int r = c / (D / 8), cc = c - r * (D / 8), tok = Tok[r];
        linea_cp_async16(Qs + r * LD + cc * 8, qb + (tok >= 0 ? (long)tok * qStride + cc * 8 : 0), tok >= 0);
    }
    linea_na_gather_kv<D>(Ks, Vs, KY, kb, vb, kStride, 0, total, bs, nb, g, DL, L1, L2);
    linea_cp_commit();
    linea_cp_wait<0>();
    __syncthreads();

    // Warp `warp` owns rows warp*16 + (gq | gq + 8); their windows stay in registers.
    const int rowW = warp * 16;
    int wsA[3], wlA[3], wsB[3], wlB[3];
#pragma unroll
    for (int a = 0; a < 3; ++a) {
        wsA[a] = Win[(rowW + gq) * 6 + 2 * a]; wlA[a] = Win[(rowW + gq) * 6 + 2 * a + 1];
        wsB[a] = Win[(rowW + gq + 8) * 6 + 2 * a]; wlB[a] = Win[(rowW + gq + 8) * 6 + 2 * a + 1];
    }
    const int mat = lane >> 3, r8 = lane & 7;  // ldmatrix: this lane addresses row r8 of matrix `mat`
    unsigned qf[KS][4];
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) linea_ldmatrix_x4(qf[ks], Qs + (rowW + (mat & 1) * 8 + r8) * LD + (mat >> 1) * 8 + ks * 16);
    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    float mRow[2] = {LINEA_NEG_INF, LINEA_NEG_INF}, lRow[2] = {0.f, 0.f};

    const int tiles = (total + BN - 1) / BN;
    for (int it = 0; it < tiles; ++it) {
        const int n0 = it * BN, buf = it & 1;
        // One barrier per tile: after it, tile `it` is visible to all and every warp is done with tile it - 1, whose
        // buffers then receive tile it + 1 while this one is computed.
        linea_cp_wait<0>();
        __syncthreads();
        if (it + 1 < tiles) {
            linea_na_gather_kv<D>(Ks + (buf ^ 1) * BN * LD, Vs + (buf ^ 1) * BN * LD, KY + (buf ^ 1) * BN * 4, kb, vb, kStride,
                                  n0 + BN, total, bs, nb, g, DL, L1, L2);
            linea_cp_commit();
        }
        const unsigned short* Kt = Ks + buf * BN * LD;
        const unsigned short* Vt = Vs + buf * BN * LD;
        const int* ky = KY + buf * BN * 4;
        // Visibility of this lane's 32 accumulator entries: bit nt*4 + e (e & 1: key 2t or 2t + 1 of n-tile nt; e >> 1:
        // row gq or gq + 8), the window test as unsigned (y - start) < length per axis.
        unsigned long long vis = 0;
#pragma unroll
        for (int nt = 0; nt < SN; ++nt) {
#pragma unroll
            for (int e1 = 0; e1 < 2; ++e1) {
                const int4 y = *(const int4*)(ky + (nt * 8 + 2 * t + e1) * 4);
                const bool a = (unsigned)(y.x - wsA[0]) < (unsigned)wlA[0] && (unsigned)(y.y - wsA[1]) < (unsigned)wlA[1]
                               && (unsigned)(y.z - wsA[2]) < (unsigned)wlA[2];
                const bool bb = (unsigned)(y.x - wsB[0]) < (unsigned)wlB[0] && (unsigned)(y.y - wsB[1]) < (unsigned)wlB[1]
                                && (unsigned)(y.z - wsB[2]) < (unsigned)wlB[2];
                vis |= (unsigned long long)(a ? 1 : 0) << (nt * 4 + e1);
                vis |= (unsigned long long)(bb ? 1 : 0) << (nt * 4 + 2 + e1);
            }
        }
        if (!__any_sync(0xffffffffu, vis != 0)) continue;  // warp-uniform: none of the warp's rows sees this tile

        float s[SN][4];
#pragma unroll
        for (int nt = 0; nt < SN; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
            for (int nt = 0; nt < SN; nt += 2) {
                // B fragments of two key n-tiles at once: matrices (keys nt*8.. | (nt+1)*8..) x (d lo | d hi).
                unsigned kf[4];
                linea_ldmatrix_x4(kf, Kt + ((nt + (mat >> 1)) * 8 + r8) * LD + ks * 16 + (mat & 1) * 8);
                linea_mma<F16>(s[nt], qf[ks], kf[0], kf[1]);
                linea_mma<F16>(s[nt + 1], qf[ks], kf[2], kf[3]);
            }
        }
#pragma unroll
        for (int nt = 0; nt < SN; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e)
                if (!((vis >> (nt * 4 + e)) & 1ull)) s[nt][e] = LINEA_NEG_INF;
        // The flash loop's steps shared with attention_mma.cu, on this warp's one 16-row subtile.
        linea_mma_softmax<1, SN, NT>(reinterpret_cast<float (&)[1][SN][4]>(s), reinterpret_cast<float (&)[1][2]>(mRow),
                                     reinterpret_cast<float (&)[1][2]>(lRow), reinterpret_cast<float (&)[1][NT][4]>(acc), scale_log2);
        linea_mma_pv<1, SN, NT, BN, LD, F16>(reinterpret_cast<const float (&)[1][SN][4]>(s), Vt, mat, r8,
                                             reinterpret_cast<float (&)[1][NT][4]>(acc));
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float l = lRow[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const int tok = Tok[rowW + gq + r * 8];
        if (tok < 0) continue;
        const float inv = l > 0.f ? 1.f / l : 0.f;
        const long base = (((long)b * N + tok) * Hq + h) * D;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int d = nt * 8 + 2 * t;
            const float v0 = acc[nt][2 * r] * inv, v1 = acc[nt][2 * r + 1] * inv;
            if (out_kind == 1) *(unsigned*)((unsigned short*)o + base + d) = linea_pack<false>(v0, v1);
            else if (out_kind == 2) *(unsigned*)((unsigned short*)o + base + d) = linea_pack<true>(v0, v1);
            else *(float2*)((float*)o + base + d) = make_float2(v0, v1);
        }
        if (t == 0 && lse != 0)
            lse[((long)b * N + tok) * Hq + h] = l > 0.f ? (mRow[r] + log2f(l)) * 0.69314718055994531f : LINEA_NEG_INF;
    }
}

#define LINEA_NA_MMA_PARAMS const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse, \
    int out_kind, int Hq, int Hkv, int L0, int L1, int L2, int K0, int K1, int K2, int S0, int S1, int S2, \
    int G0, int G1, int G2, int causal_bits, int T0, int T1, int T2, int NT0, int NT1, int NT2, float scale_log2
#define LINEA_NA_MMA_ARGS q, k, v, o, lse, out_kind, Hq, Hkv, L0, L1, L2, K0, K1, K2, S0, S1, S2, \
    G0, G1, G2, causal_bits, T0, T1, T2, NT0, NT1, NT2, scale_log2

// Entries by element type and head dim (D = Dv).
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_natten_mma_bf16_d64)
extern "C" __global__ void __launch_bounds__(128) linea_natten_mma_bf16_d64(LINEA_NA_MMA_PARAMS) { linea_natten_mma<64, false>(LINEA_NA_MMA_ARGS); }
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_natten_mma_bf16_d128)
extern "C" __global__ void __launch_bounds__(128) linea_natten_mma_bf16_d128(LINEA_NA_MMA_PARAMS) { linea_natten_mma<128, false>(LINEA_NA_MMA_ARGS); }
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_natten_mma_f16_d64)
extern "C" __global__ void __launch_bounds__(128) linea_natten_mma_f16_d64(LINEA_NA_MMA_PARAMS) { linea_natten_mma<64, true>(LINEA_NA_MMA_ARGS); }
#endif
#if !defined(LINEA_SELECT) || defined(LINEA_ONLY_linea_natten_mma_f16_d128)
extern "C" __global__ void __launch_bounds__(128) linea_natten_mma_f16_d128(LINEA_NA_MMA_PARAMS) { linea_natten_mma<128, true>(LINEA_NA_MMA_ARGS); }
#endif
