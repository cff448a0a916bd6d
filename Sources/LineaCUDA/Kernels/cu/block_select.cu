// Linea: the prefill selectors' scoring (BlockSelector's XAttention, top-k and MInference; BlockScoresCall) over q
// [B, T, Hq, D] and k [B, S, Hkv, D] of f32, bf16 or f16 (kind 0, 1, 2: a launch argument), query head h reading key
// head h / (Hq / Hkv), fp32 accumulation, fp32 outputs. The host downloads these small arrays and runs the selection
// (sorts, thresholds, forced blocks) with the CPU's code, so both devices choose by one definition. Causal masks are
// aligned bottom-right: query i sits at position i + S - T. bs is the square block size, QB = ceil(T / bs),
// KB = ceil(S / bs).
// Entries:
//   linea_bsel_antidiag  one thread block per (b, h, query group r of s = stride queries): x_c = factor · Σ_t
//                        q[r s + s-1-t] · k[c s + t] (t with both indices in range; factor = scale / s) over the
//                        visible key groups c (causal: c s <= the group's last position), softmaxed over them and added
//                        into blocks [B, Hq, QB, KB] at (r s / bs, c s / bs); the bs / s groups of a block row run in
//                        different thread blocks, hence atomics (out zeroed by the caller)
//   linea_bsel_pool      out [B, H, nb, D] = the mean of each run of bs rows of x [B, L, H, D] (the last run partial)
//   linea_bsel_pooled    scores [B, Hq, QB, KB] = scale · qm [B, Hq, QB, D] · km [B, Hkv, KB, D] (key head h / group)
//   linea_bsel_lastq     one thread block per (b, h, r) of the last n queries (i = T - n + r, causal): their softmax
//                        over the keys j <= i + S - T, added into columns [B, Hq, S] at j, diagonals [B, Hq, S] at
//                        position - j and mass [B, Hq, rows, KB] at (i / bs - (T - n) / bs, j / bs)
//   linea_bsel_groups    XAttention's gemm path: one head's q (rows reversed per group) or k as [groups, s D]
//   linea_bsel_rowsoftmax  XAttention's gemm path: rows of X = Q' K'ᵀ (cuBLAS) softmaxed and added into the blocks
// The two row kernels compute each score with a warp (lanes over D, a shuffle sum), keep an online max and sum, then
// either reread the scores they kept in dynamic shared memory (`cached`: the launcher's choice when the row fits) or
// recompute them (same order, same value) for the second pass.
#include "element_io.cuh"

#define LINEA_BSEL_THREADS 256
#define LINEA_BSEL_WARPS (LINEA_BSEL_THREADS / 32)
#define LINEA_BSEL_NEG_INF (-__int_as_float(0x7f800000))

#define LINEA_BSEL_STRIDE_LOOP(total) \
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < (total); i += (long)gridDim.x * blockDim.x)

__device__ __forceinline__ float linea_bsel_warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// (m, l) := the max and the sum of exp(x - max) of both sets; (-inf, 0) is the empty set.
__device__ __forceinline__ void linea_bsel_merge(float& m, float& l, float m2, float l2) {
    const float mm = fmaxf(m, m2);
    if (mm == LINEA_BSEL_NEG_INF) return;
    l = (m == LINEA_BSEL_NEG_INF ? 0.f : l * expf(m - mm)) + (m2 == LINEA_BSEL_NEG_INF ? 0.f : l2 * expf(m2 - mm));
    m = mm;
}

// Every thread's (m, l) becomes the thread block's, from each warp's (uniform over its lanes).
__device__ __forceinline__ void linea_bsel_block_stats(float& m, float& l) {
    __shared__ float part[2 * LINEA_BSEL_WARPS];
    const int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) {
        part[warp] = m;
        part[LINEA_BSEL_WARPS + warp] = l;
    }
    __syncthreads();
    m = LINEA_BSEL_NEG_INF;
    l = 0.f;
    for (int w = 0; w < LINEA_BSEL_WARPS; ++w) linea_bsel_merge(m, l, part[w], part[LINEA_BSEL_WARPS + w]);
}

// Element offset of row j of key head hk in batch b of k [B, S, Hkv, D].
__device__ __forceinline__ long linea_bsel_krow(int b, int j, int hk, int S, int Hkv, int D) {
    return (((long)b * S + j) * Hkv + hk) * D;
}

// XAttention's score of key group c for the query rows held reversed in qs (qs[t D + d] = q[r s + s-1-t][d]), over
// the t with both indices in range; the warp's lanes split D, every lane returns the sum.
__device__ __forceinline__ float linea_bsel_antidiag_score(const float* qs, const void* k, int kind, int b, int hk, int c, int s,
                                                           int first, int S, int Hkv, int D, float factor) {
    const int lane = threadIdx.x & 31;
    const int end = min(s, S - c * s);
    float acc = 0.f;
    for (int t = first; t < end; ++t) {
        const long kr = linea_bsel_krow(b, c * s + t, hk, S, Hkv, D);
        for (int d = lane; d < D; d += 32) acc += qs[t * D + d] * ld_kind(k, kr + d, kind);
    }
    return linea_bsel_warp_sum(acc) * factor;
}

extern "C" __global__ void __launch_bounds__(LINEA_BSEL_THREADS) linea_bsel_antidiag(
    const void* q, const void* k, int kind, float* blocks, int B, int T, int S, int Hq, int Hkv, int D, int s, int bs, int causal,
    float factor, int cached) {
    extern __shared__ float smem[];  // qs [s D], then the row's scores [C] when cached
    const int R = (T + s - 1) / s, C = (S + s - 1) / s;
    const int QB = (T + bs - 1) / bs, KB = (S + bs - 1) / bs;
    const long id = blockIdx.x;
    const int r = (int)(id % R);
    const long bh = id / R;
    const int h = (int)(bh % Hq), b = (int)(bh / Hq);
    const int hk = h / (Hq / Hkv);
    const int lastPosition = min(T - 1, r * s + s - 1) + (causal ? S - T : 0);
    if (lastPosition < 0) return;  // the whole group sees no key (uniform over the block)
    const int visible = causal ? min(C, lastPosition / s + 1) : C;
    const int first = max(0, r * s + s - T);  // t below it index queries past T
    float* qs = smem;
    float* row = smem + s * D;
    for (int e = threadIdx.x; e < s * D; e += blockDim.x) {
        const int t = e / D, d = e - t * D;
        qs[e] = t >= first ? ld_kind(q, (((long)b * T + (r * s + s - 1 - t)) * Hq + h) * D + d, kind) : 0.f;
    }
    __syncthreads();
    const int warp = threadIdx.x >> 5;
    float m = LINEA_BSEL_NEG_INF, l = 0.f;
    for (int c = warp; c < visible; c += LINEA_BSEL_WARPS) {
        const float x = linea_bsel_antidiag_score(qs, k, kind, b, hk, c, s, first, S, Hkv, D, factor);
        if (cached && (threadIdx.x & 31) == 0) row[c] = x;
        linea_bsel_merge(m, l, x, 1.f);
    }
    linea_bsel_block_stats(m, l);  // its barrier also publishes row
    const float inv = 1.f / l;
    float* out = blocks + (bh * QB + (long)r * s / bs) * KB;
    if (cached) {
        for (int c = threadIdx.x; c < visible; c += blockDim.x) atomicAdd(out + (long)c * s / bs, expf(row[c] - m) * inv);
    } else {
        for (int c = warp; c < visible; c += LINEA_BSEL_WARPS) {
            const float x = linea_bsel_antidiag_score(qs, k, kind, b, hk, c, s, first, S, Hkv, D, factor);
            if ((threadIdx.x & 31) == 0) atomicAdd(out + (long)c * s / bs, expf(x - m) * inv);
        }
    }
}

extern "C" __global__ void linea_bsel_pool(const void* x, int kind, float* out, int B, int L, int H, int D, int bs) {
    const int nb = (L + bs - 1) / bs;
    LINEA_BSEL_STRIDE_LOOP((long)B * H * nb * D) {
        const int d = (int)(i % D);
        const long rest = i / D;
        const int blk = (int)(rest % nb);
        const long bh = rest / nb;
        const int h = (int)(bh % H), b = (int)(bh / H);
        const int t0 = blk * bs, t1 = min(L, t0 + bs);
        float acc = 0.f;
        for (int t = t0; t < t1; ++t) acc += ld_kind(x, (((long)b * L + t) * H + h) * D + d, kind);
        out[i] = acc / (float)(t1 - t0);
    }
}

extern "C" __global__ void linea_bsel_pooled(const float* qm, const float* km, float* scores, int B, int Hq, int Hkv, int QB,
                                             int KB, int D, float scale) {
    LINEA_BSEL_STRIDE_LOOP((long)B * Hq * QB * KB) {
        const int J = (int)(i % KB);
        const long rest = i / KB;
        const int I = (int)(rest % QB);
        const long bh = rest / QB;
        const int h = (int)(bh % Hq), b = (int)(bh / Hq);
        const float* a = qm + (bh * QB + I) * D;
        const float* c = km + (((long)b * Hkv + h / (Hq / Hkv)) * KB + J) * D;
        float acc = 0.f;
        for (int d = 0; d < D; ++d) acc += a[d] * c[d];
        scores[i] = scale * acc;
    }
}

// Query i's score against key j (qs holds q's row times scale); the warp's lanes split D, every lane returns the sum.
__device__ __forceinline__ float linea_bsel_lastq_score(const float* qs, const void* k, int kind, int b, int hk, int j, int S,
                                                        int Hkv, int D) {
    const long kr = linea_bsel_krow(b, j, hk, S, Hkv, D);
    float acc = 0.f;
    for (int d = threadIdx.x & 31; d < D; d += 32) acc += qs[d] * ld_kind(k, kr + d, kind);
    return linea_bsel_warp_sum(acc);
}

// Adds probability p of key j (query at `position`, mass row `massRow`) into the three sums of head bh.
__device__ __forceinline__ void linea_bsel_lastq_add(float* columns, float* diagonals, float* massRow, long bh, int S, int bs,
                                                     int position, int j, float p) {
    atomicAdd(columns + bh * S + j, p);
    atomicAdd(diagonals + bh * S + (position - j), p);
    atomicAdd(massRow + j / bs, p);
}

extern "C" __global__ void __launch_bounds__(LINEA_BSEL_THREADS) linea_bsel_lastq(
    const void* q, const void* k, int kind, float* columns, float* diagonals, float* mass, int B, int T, int S, int Hq, int Hkv,
    int D, int n, int bs, float scale, int cached) {
    extern __shared__ float smem[];  // qs [D], then the row's scores [S] when cached
    const long id = blockIdx.x;
    const int r = (int)(id % n);
    const long bh = id / n;
    const int h = (int)(bh % Hq), b = (int)(bh / Hq);
    const int hk = h / (Hq / Hkv);
    const int i = T - n + r, position = i + S - T;
    if (position < 0) return;  // sees no key (uniform over the block)
    const int visible = min(S, position + 1);
    const int KB = (S + bs - 1) / bs, firstBlock = (T - n) / bs, rows = (T - 1) / bs - firstBlock + 1;
    float* massRow = mass + (bh * rows + (i / bs - firstBlock)) * KB;
    float* qs = smem;
    float* row = smem + D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = scale * ld_kind(q, (((long)b * T + i) * Hq + h) * D + d, kind);
    __syncthreads();
    const int warp = threadIdx.x >> 5;
    float m = LINEA_BSEL_NEG_INF, l = 0.f;
    for (int j = warp; j < visible; j += LINEA_BSEL_WARPS) {
        const float x = linea_bsel_lastq_score(qs, k, kind, b, hk, j, S, Hkv, D);
        if (cached && (threadIdx.x & 31) == 0) row[j] = x;
        linea_bsel_merge(m, l, x, 1.f);
    }
    linea_bsel_block_stats(m, l);  // its barrier also publishes row
    const float inv = 1.f / l;
    if (cached) {
        for (int j = threadIdx.x; j < visible; j += blockDim.x) {
            linea_bsel_lastq_add(columns, diagonals, massRow, bh, S, bs, position, j, expf(row[j] - m) * inv);
        }
    } else {
        for (int j = warp; j < visible; j += LINEA_BSEL_WARPS) {
            const float x = linea_bsel_lastq_score(qs, k, kind, b, hk, j, S, Hkv, D);
            if ((threadIdx.x & 31) == 0) {
                linea_bsel_lastq_add(columns, diagonals, massRow, bh, S, bs, position, j, expf(x - m) * inv);
            }
        }
    }
}

// ---- XAttention's scores as a GEMM (CUDABlockSelect's `gemm` path): the antidiagonal score of query group r and key
// group c is one dot product of length s D between Q'[r] = (q[r s + s-1], ..., q[r s]) and K'[c] = (k[c s], ...,
// k[c s + s-1]) (rows past T or S zero), so X = Q' K'ᵀ runs on cuBLAS (tensor cores for bf16 / f16); these kernels
// build Q', K' and turn rows of X into the block sums.

// out [G, s D] (G = ceil(L / s)) of head hh in batch b of x [B, L, H, D], same element type: out[g, t D + d] =
// x[row] with row = g s + s-1-t (reverse) or g s + t, zero past L.
extern "C" __global__ void linea_bsel_groups(const void* x, void* out, int kind, int b, int L, int H, int hh, int D, int s,
                                             int reverse) {
    const int G = (L + s - 1) / s;
    LINEA_BSEL_STRIDE_LOOP((long)G * s * D) {
        const long g = i / ((long)s * D);
        const int e = (int)(i - g * s * D), t = e / D, d = e - t * D;
        const long row = reverse ? g * s + s - 1 - t : g * s + t;
        st_kind(out, i, kind, row < L ? ld_kind(x, (((long)b * L + row) * H + hh) * D + d, kind) : 0.f);
    }
}

// One thread block per row r = r0 + blockIdx.x of X [rows, n] (f32, row r at X + blockIdx.x n): softmax of factor X
// over the visible groups c (n covers them), added into one head's blocks [QB, KB] at (r s / bs, c s / bs).
extern "C" __global__ void __launch_bounds__(LINEA_BSEL_THREADS) linea_bsel_rowsoftmax(
    const float* X, int n, float* blocks, int r0, int T, int S, int s, int bs, int causal, float factor) {
    const int r = r0 + blockIdx.x, C = (S + s - 1) / s, KB = (S + bs - 1) / bs;
    const int lastPosition = min(T - 1, r * s + s - 1) + (causal ? S - T : 0);
    if (lastPosition < 0) return;  // uniform over the block
    const int visible = min(n, causal ? min(C, lastPosition / s + 1) : C);
    const float* x = X + (long)blockIdx.x * n;
    float m = LINEA_BSEL_NEG_INF, l = 0.f;
    for (int c = threadIdx.x; c < visible; c += blockDim.x) linea_bsel_merge(m, l, x[c] * factor, 1.f);
    // Lanes first (the block merge reads each warp's lane 0).
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), l2 = __shfl_xor_sync(0xffffffffu, l, o);
        linea_bsel_merge(m, l, m2, l2);
    }
    linea_bsel_block_stats(m, l);
    const float inv = 1.f / l;
    float* out = blocks + (long)(r * s / bs) * KB;
    for (int c = threadIdx.x; c < visible; c += blockDim.x) atomicAdd(out + (long)c * s / bs, expf(x[c] * factor - m) * inv);
}
