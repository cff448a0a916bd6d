// Linea: the ops a model needs besides the mixers (CPUOps / ReferenceOps semantics), fp32 compute.
// Float tensors of one call share one element type T (f32, bf16 or f16: the entry's suffix); outputs are T unless
// said otherwise. Entries (SUF = f32 | bf16 | f16):
//   linea_embed_{i32,i64}_SUF   ids [n], table [vocab, dim] -> out [n, dim]; a bad id's row is zeroed and the first
//                               bad position goes to *bad when not null (atomicMin; the launcher starts it at INT_MAX)
//   linea_norm_SUF              one block per row of [rows, dim]: mode 0 RMSNorm (x w), 1 zero-centered (x (1 + w)),
//                               2 gated (x w silu(gate)), 3 L2 norm (x / sqrt(sum x^2 + eps), w unused); w of kind wk
//                               (0 f32, 1 bf16, 2 f16: a weight read in its file dtype beside x in another)
//   linea_norm_warp_SUF         the same with one warp per row, blockDim / 32 rows per block (rows of a head's width)
//   linea_{norm,norm_warp,swiglu_halves}_f32_to_{bf16,f16}   f32 in, a 16-bit out (a bf16 matmul's input)
//   linea_unary_SUF             op 0 silu, 1 sigmoid, 2 gelu (erf), 3 gelu (tanh), 4 softplus (threshold 20),
//                               5 clamp to [lo, hi], 6 exp
//   linea_swiglu_halves_SUF     out [rows, width] = silu(x[:, :width]) x[:, width:] of x [rows, 2 width]
//   linea_binary_SUF            op 0 swiglu silu(a) b, 1 add a + b, 2 mul a b, 3 div a / b; a[i] meets b[(i / inner) % bn] (b broadcast)
//   linea_rotary_SUF            x [tokens, heads, headDim], positions int32 [tokens]; layout 0 half-split, 1 interleaved;
//                               angles in fp64; dims >= rotaryDim copied. out must not alias x.
//   linea_conv1d_SUF            causal depthwise conv, x [B, T, C], w [C, W] and bias [C] or null both of kind wk,
//                               state [B, C, W-1] or null (read, then replaced by the last W-1 inputs); out holds
//                               channels [0, p1), [p1, p2), [p2, C) as packed [B, T, width] blocks one after another
//                               (p1 = p2 = C: out [B, T, C]); grid (ceil(B C / 256), ceil(T / 64))
//   linea_softmax_SUF           one block per row
//   linea_route_SUF             softmax, top-k (ties to the lower index), optional renormalization; weights f32, ids int32
//   linea_argmax_SUF            one block per row, ties to the lower index; out int32
//   linea_add_bias_SUF          out [rows, cols] += bias [cols]
//   linea_copy_strided_eN       out[box index . dst strides] = x[box index . src strides] over a box of up to 6 axes,
//                               elements of N = 1, 2, 4, 8 bytes (a strided view packed, or packed into one)
//   linea_copy_rows_uN          the same for a box whose last axis is packed on both sides: one block per row of up to
//                               5 row axes, units of N = 1, 2, 4, 8, 16 bytes
//   linea_index_add_f32         target [R, dim] += w[i] values [i] at rows[i] (int32; w null: 1); a bad row is skipped and
//                               the first goes to *bad as for the embedding
//   linea_transpose_SUF         x [batches, rows, cols] -> out [batches, cols, rows]; 32 x 32 tiles, block (32, 8),
//                               grid (ceil(cols / 32), ceil(rows / 32), batches)
//   linea_pad2d_SUF             out [n, rows, cols] = x [n, xRows, xCols] where both have the element, else 0 (pads
//                               or crops the last two axes)
//   linea_cast_SRC_DST          out = x converted between f32, bf16 and f16 (round to nearest even)
//   linea_sample_SUF            one block per row: temperature, top-k (keeps ties with the k-th), top-p, then the first
//                               token whose cumulative kept probability exceeds u[row] * kept mass; temperature 0: argmax
#define LINEA_THREADS 256
#define LINEA_INF __int_as_float(0x7f800000)

#include "element_io.cuh"

__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }

// Block-wide sum / max / int sum; every thread gets the result. blockDim.x a multiple of 32, <= 1024.
__device__ float block_sum(float v) {
    __shared__ float part[32];
    __syncthreads();  // part may still be read by a previous call
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    v = 0.f;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) v += part[w];
    return v;
}
__device__ float block_max(float v) {
    __shared__ float part[32];
    __syncthreads();
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    v = -LINEA_INF;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) v = fmaxf(v, part[w]);
    return v;
}
__device__ int block_count(int v) {
    __shared__ int part[32];
    __syncthreads();
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    v = 0;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) v += part[w];
    return v;
}
// (value, index) of the largest value, ties to the lower index.
__device__ void block_argmax(float& v, int& i) {
    __shared__ float pv[32];
    __shared__ int pi[32];
    __syncthreads();
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
    }
    if ((threadIdx.x & 31) == 0) { pv[threadIdx.x >> 5] = v; pi[threadIdx.x >> 5] = i; }
    __syncthreads();
    v = pv[0]; i = pi[0];
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w)
        if (pv[w] > v || (pv[w] == v && pi[w] < i)) { v = pv[w]; i = pi[w]; }
}

template <typename ID, typename T>
__device__ void embed(const ID* ids, const T* table, T* out, int n, int vocab, int dim, int* bad) {
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < (long)n * dim; e += (long)gridDim.x * blockDim.x) {
        const long row = e / dim, c = e % dim;
        const long id = (long)ids[row];
        if (id < 0 || id >= vocab) {
            st(out, e, 0.f);
            if (c == 0 && bad) atomicMin(bad, (int)row);
        } else {
            out[e] = table[id * dim + c];
        }
    }
}

// Element c of a row normalized by inv, times the mode's weight and gate, stored at out[at].
template <typename T, typename TO>
__device__ __forceinline__ void norm_put(const T* x, const T* gate, const void* w, int wk, TO* out, long at, int c, float inv,
                                         int mode) {
    float y = ld(x, at) * inv;
    if (mode == 0 || mode == 2) y *= ld_kind(w, c, wk);
    if (mode == 1) y *= 1.f + ld_kind(w, c, wk);
    if (mode == 2) { const float z = ld(gate, at); y *= z * sigmoidf_(z); }
    st(out, at, y);
}

template <typename T, typename TO>
__device__ void norm(const T* x, const T* gate, const void* w, int wk, TO* out, int dim, float eps, int mode) {
    const long base = (long)blockIdx.x * dim;
    float ss = 0.f;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) { const float v = ld(x, base + c); ss = fmaf(v, v, ss); }
    ss = block_sum(ss);
    const float inv = mode == 3 ? rsqrtf(ss + eps) : rsqrtf(ss / (float)dim + eps);
    for (int c = threadIdx.x; c < dim; c += blockDim.x) norm_put(x, gate, w, wk, out, base + c, c, inv, mode);
}

// The same for short rows (a head's 64 or 128): one warp per row, blockDim / 32 rows per block, so that a block of
// 256 threads does not leave most of its threads idle on a row of 128.
template <typename T, typename TO>
__device__ void norm_warp(const T* x, const T* gate, const void* w, int wk, TO* out, int rows, int dim, float eps, int mode) {
    const long row = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    const int lane = threadIdx.x & 31;
    const long base = row * dim;
    float ss = 0.f;
    for (int c = lane; c < dim; c += 32) { const float v = ld(x, base + c); ss = fmaf(v, v, ss); }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float inv = mode == 3 ? rsqrtf(ss + eps) : rsqrtf(ss / (float)dim + eps);
    for (int c = lane; c < dim; c += 32) norm_put(x, gate, w, wk, out, base + c, c, inv, mode);
}

template <typename T, typename TO>
__device__ void swiglu_halves(const T* x, TO* out, int rows, int width) {
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < (long)rows * width; e += (long)gridDim.x * blockDim.x) {
        const long at = e / width * 2 * width + e % width;
        const float g = ld(x, at);
        st(out, e, g * sigmoidf_(g) * ld(x, at + width));
    }
}

template <typename T>
__device__ void unary(const T* x, T* out, int n, int op, float lo, float hi) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const float v = ld(x, i);
        float y;
        switch (op) {
        case 0: y = v * sigmoidf_(v); break;
        case 1: y = sigmoidf_(v); break;
        case 2: y = 0.5f * v * erfcf(-v * 0.70710678118654752f); break;
        case 3: y = v * sigmoidf_(1.5957691216057308f * (v + 0.044715f * v * v * v)); break;
        case 4: y = v > 20.f ? v : log1pf(expf(v)); break;
        case 5: y = fminf(fmaxf(v, lo), hi); break;
        default: y = expf(v); break;
        }
        st(out, i, y);
    }
}

template <typename T>
__device__ void binary(const T* a, const T* b, T* out, int n, int op, int bn, int inner) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const float x = ld(a, i), y = ld(b, (i / inner) % bn);
        st(out, i, op == 0 ? x * sigmoidf_(x) * y : op == 1 ? x + y : op == 2 ? x * y : x / y);
    }
}

template <typename T>
__device__ void rotary(const T* x, const int* positions, T* out, int tokens, int heads, int headDim, int rotaryDim,
                       float theta, int layout, float factor, float lowFactor, float highFactor, float context) {
    const long n = (long)tokens * heads * headDim;
    const int half = rotaryDim / 2;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < n; e += (long)gridDim.x * blockDim.x) {
        const int d = (int)(e % headDim);
        if (d >= rotaryDim) { out[e] = x[e]; continue; }
        const long t = e / ((long)heads * headDim);
        // This dim's frequency index and partner; `first`: the pair's first element (x_a cos - x_b sin, x_b cos + x_a sin).
        const int i = layout == 0 ? d % half : d / 2;
        const bool first = layout == 0 ? d < half : (d & 1) == 0;
        if (!first) continue;  // the pair's first element writes both: one angle (fp64 pow and sincos) per pair
        const long partner = layout == 0 ? e + half : e + 1;
        double s, c;
        double frequency = pow((double)theta, -2.0 * i / rotaryDim);
        if (factor > 0.f) {  // Llama 3: long wavelengths slowed by `factor`, short ones kept, the band between blended
            const double wavelength = 6.283185307179586 / frequency;
            if (wavelength > context / lowFactor) frequency /= factor;
            else if (wavelength >= context / highFactor) {
                const double smooth = (context / wavelength - lowFactor) / (highFactor - lowFactor);
                frequency = (1.0 - smooth) * frequency / factor + smooth * frequency;
            }
        }
        sincos((double)positions[t] * frequency, &s, &c);
        const float xv = ld(x, e), xp = ld(x, partner);
        st(out, e, xv * (float)c - xp * (float)s);
        st(out, partner, xp * (float)c + xv * (float)s);
    }
}

// Thread (b, c) of grid.x walks the chunk blockIdx.y of LINEA_CONV_CHUNK time steps (W - 1 <= 3 < the chunk, so only
// chunk 0 reads the state; that thread also writes the new state, after its own reads).
#define LINEA_CONV_CHUNK 64
template <typename T>
__device__ void conv1d(const T* x, const void* w, const void* bias, int wk, T* state, T* out, int batch, int length,
                       int channels, int width, int silu, int p1, int p2) {
    const long bc = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (bc >= (long)batch * channels) return;
    const int b = (int)(bc / channels), c = (int)(bc % channels), s = width - 1;
    const int t0 = blockIdx.y * LINEA_CONV_CHUNK, t1 = min(t0 + LINEA_CONV_CHUNK, length);
    float win[4] = {0.f, 0.f, 0.f, 0.f}, taps[4] = {0.f, 0.f, 0.f, 0.f}, old[3] = {0.f, 0.f, 0.f};  // win[j]: input at t - s + j
    for (int j = 0; j < width; ++j) taps[j] = ld_kind(w, (long)c * width + j, wk);
    if (state && t0 == 0) for (int j = 0; j < s; ++j) old[j] = ld(state, bc * s + j);
    for (int j = 0; j < s; ++j) {
        const int time = t0 - s + j;
        win[j] = time >= 0 ? ld(x, ((long)b * length + time) * channels + c) : old[s + time];
    }
    const float bv = bias ? ld_kind(bias, c, wk) : 0.f;
    // This channel's part: its first channel and width, and where its block starts in out.
    const long rows = (long)batch * length;
    const int first = c < p1 ? 0 : c < p2 ? p1 : p2, part = (c < p1 ? p1 : c < p2 ? p2 : channels) - first;
    T* const block = out + rows * first + (c - first);
    for (int t = t0; t < t1; ++t) {
        const long row = (long)b * length + t;
        win[s] = ld(x, row * channels + c);
        float y = bv;
        for (int j = 0; j < width; ++j) y = fmaf(taps[j], win[j], y);
        st(block, row * part, silu ? y * sigmoidf_(y) : y);
        for (int j = 0; j < s; ++j) win[j] = win[j + 1];
    }
    if (state && t0 == 0)
        for (int j = 0; j < s; ++j) {
            const int time = length - s + j;
            st(state, bc * s + j, time >= 0 ? ld(x, ((long)b * length + time) * channels + c) : old[s + time]);
        }
}

template <typename T>
__device__ void softmax(const T* x, T* out, int cols) {
    const long base = (long)blockIdx.x * cols;
    float m = -LINEA_INF;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, ld(x, base + c));
    m = block_max(m);
    float sum = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += expf(ld(x, base + c) - m);
    const float inv = 1.f / block_sum(sum);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) st(out, base + c, expf(ld(x, base + c) - m) * inv);
}

// Dynamic shared memory: experts floats.
template <typename T>
__device__ void route(const T* logits, float* weights, int* indices, int experts, int k, int normalize) {
    extern __shared__ float p[];
    const long base = (long)blockIdx.x * experts;
    float m = -LINEA_INF;
    for (int e = threadIdx.x; e < experts; e += blockDim.x) m = fmaxf(m, ld(logits, base + e));
    m = block_max(m);
    float sum = 0.f;
    for (int e = threadIdx.x; e < experts; e += blockDim.x) { p[e] = expf(ld(logits, base + e) - m); sum += p[e]; }
    const float inv = 1.f / block_sum(sum);  // its barrier also publishes p
    for (int slot = 0; slot < k; ++slot) {
        float v = -1.f;
        int i = 0x7fffffff;
        for (int e = threadIdx.x; e < experts; e += blockDim.x)
            if (p[e] >= 0.f && (p[e] > v || (p[e] == v && e < i))) { v = p[e]; i = e; }
        block_argmax(v, i);
        if (threadIdx.x == 0) {
            weights[(long)blockIdx.x * k + slot] = v * inv;
            indices[(long)blockIdx.x * k + slot] = i;
            p[i] = -1.f;  // taken
        }
        __syncthreads();
    }
    if (normalize && threadIdx.x == 0) {
        float total = 0.f;
        for (int slot = 0; slot < k; ++slot) total += weights[(long)blockIdx.x * k + slot];
        for (int slot = 0; slot < k; ++slot) weights[(long)blockIdx.x * k + slot] /= total;
    }
}

template <typename T>
__device__ int row_argmax(const T* x, long base, int cols) {
    float v = -LINEA_INF;
    int i = 0x7fffffff;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float xv = ld(x, base + c);
        if (xv > v || i == 0x7fffffff) { v = xv; i = c; }  // increasing c: the first of equals stays
    }
    block_argmax(v, i);
    return i;
}

template <typename T>
__device__ void argmax(const T* x, int* out, int cols) {
    const int i = row_argmax(x, (long)blockIdx.x * cols, cols);
    if (threadIdx.x == 0) out[blockIdx.x] = i;
}

// Order-preserving map of a float to an unsigned key, and back.
__device__ __forceinline__ unsigned int fkey(float f) {
    const unsigned int b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}
__device__ __forceinline__ float keyf(unsigned int k) {
    return __uint_as_float((k & 0x80000000u) ? k & 0x7fffffffu : ~k);
}

template <typename T>
__device__ void sample(const T* logits, const float* u, int* out, int vocab, float temperature, int topK, float topP) {
    const long base = (long)blockIdx.x * vocab;
    if (temperature == 0.f) {
        const int i = row_argmax(logits, base, vocab);
        if (threadIdx.x == 0) out[blockIdx.x] = i;
        return;
    }
    const float invT = 1.f / temperature;
    float m = -LINEA_INF;
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) m = fmaxf(m, ld(logits, base + c) * invT);
    m = block_max(m);
    // Top-k: the k-th largest scaled logit, the largest key with count(x >= key) >= k (bisection on the keys).
    unsigned int kth = 0u;
    if (topK > 0 && topK < vocab) {
        unsigned int lo = 0u, hi = 0xffffffffu;  // count(>= lo) >= k holds; find the largest such
        while (lo < hi) {
            // The upper middle, lo < mid <= hi; `lo + (hi - lo + 1) / 2` wraps to 0 at the first step (hi - lo + 1 =
            // 2^32) and never moved: the kernel spun forever whenever 0 < topK < vocab.
            const unsigned int mid = hi - (hi - lo) / 2;
            int n = 0;
            for (int c = threadIdx.x; c < vocab; c += blockDim.x) n += fkey(ld(logits, base + c) * invT) >= mid;
            if (block_count(n) >= topK) lo = mid; else hi = mid - 1;
        }
        kth = lo;
    }
#define LINEA_P(c) (fkey(ld(logits, base + (c)) * invT) >= kth ? expf(ld(logits, base + (c)) * invT - m) * invZ : 0.f)
    float z = 0.f;
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
        const float x = ld(logits, base + c) * invT;
        if (fkey(x) >= kth) z += expf(x - m);
    }
    const float invZ = 1.f / block_sum(z);
    // Top-p: tokens with probability above pm are kept; ties at pm in index order while the mass before is < topP.
    float pm = 0.f, above = 0.f;  // above: the mass strictly above pm
    if (topP < 1.f) {
        unsigned int lo = 0u, hi = __float_as_uint(1.f);  // smallest t (as bits, t >= 0) with mass(p > t) < topP
        while (lo < hi) {
            const unsigned int mid = lo + (hi - lo) / 2;
            const float t = __uint_as_float(mid);
            float s = 0.f;
            for (int c = threadIdx.x; c < vocab; c += blockDim.x) { const float p = LINEA_P(c); if (p > t) s += p; }
            if (block_sum(s) < topP) hi = mid; else lo = mid + 1;
        }
        pm = __uint_as_float(lo);
        float s = 0.f;
        for (int c = threadIdx.x; c < vocab; c += blockDim.x) { const float p = LINEA_P(c); if (p > pm) s += p; }
        above = block_sum(s);
    }
    // Warp 0 walks the row in index order: kept mass first, then the token.
    if (threadIdx.x >= 32) return;
    const int lane = threadIdx.x;
    float pass[2] = {0.f, 0.f};  // kept mass; then the target
    for (int round = 0; round < 2; ++round) {
        float cumulative = 0.f;
        int ties = 0, last = 0;
        const float target = round == 0 ? LINEA_INF : u[blockIdx.x] * pass[0];
        for (int c0 = 0; c0 < vocab; c0 += 32) {
            const int c = c0 + lane;
            const float p = c < vocab ? LINEA_P(c) : 0.f;
            const bool tie = topP < 1.f && p > 0.f && p == pm;
            const unsigned int tieMask = __ballot_sync(0xffffffffu, tie);
            const int tieRank = ties + __popc(tieMask & ((1u << lane) - 1u));
            const bool kept = p > 0.f && (topP >= 1.f || p > pm || (tie && above + (float)tieRank * pm < topP));
            ties += __popc(tieMask);
            float w = kept ? p : 0.f;
            for (int o = 1; o < 32; o <<= 1) { const float n = __shfl_up_sync(0xffffffffu, w, o); if (lane >= o) w += n; }
            const unsigned int keptMask = __ballot_sync(0xffffffffu, kept);
            if (keptMask) last = c0 + 31 - __clz(keptMask);
            const unsigned int hit = __ballot_sync(0xffffffffu, kept && cumulative + w > target);
            if (hit) { if (lane == 0) out[blockIdx.x] = c0 + __ffs(hit) - 1; return; }
            cumulative += __shfl_sync(0xffffffffu, w, 31);
        }
        pass[round] = cumulative;
        if (round == 1 && lane == 0) out[blockIdx.x] = last;
    }
#undef LINEA_P
}

// One 32 x 32 tile through shared memory (a padded row: the column reads hit 32 banks), so both the reads and the
// writes are coalesced.
template <typename T>
__device__ void transpose(const T* x, T* out, int rows, int cols) {
    __shared__ float tile[32][33];
    const long base = (long)blockIdx.z * rows * cols;
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        const int r = r0 + i, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[i][threadIdx.x] = ld(x, base + (long)r * cols + c);
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        const int c = c0 + i, r = r0 + threadIdx.x;
        if (r < rows && c < cols) st(out, base + (long)c * rows + r, tile[threadIdx.x][i]);
    }
}

#define LINEA_ENTRIES(SUF, T) \
extern "C" __global__ void linea_embed_i32_##SUF(const int* ids, const T* table, T* out, int n, int vocab, int dim, int* bad) \
{ embed(ids, table, out, n, vocab, dim, bad); } \
extern "C" __global__ void linea_embed_i64_##SUF(const long long* ids, const T* table, T* out, int n, int vocab, int dim, int* bad) \
{ embed(ids, table, out, n, vocab, dim, bad); } \
extern "C" __global__ void __launch_bounds__(LINEA_THREADS) linea_norm_##SUF(const T* x, const T* gate, const void* w, int wk, \
    T* out, int dim, float eps, int mode) { norm(x, gate, w, wk, out, dim, eps, mode); } \
extern "C" __global__ void linea_norm_warp_##SUF(const T* x, const T* gate, const void* w, int wk, T* out, int rows, int dim, \
    float eps, int mode) { norm_warp(x, gate, w, wk, out, rows, dim, eps, mode); } \
extern "C" __global__ void linea_transpose_##SUF(const T* x, T* out, int rows, int cols) { transpose(x, out, rows, cols); } \
extern "C" __global__ void linea_pad2d_##SUF(const T* x, T* out, int n, int xRows, int xCols, int rows, int cols) { \
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < (long)n * rows * cols; e += (long)gridDim.x * blockDim.x) { \
        const int c = (int)(e % cols), r = (int)(e / cols % rows); const long i = e / ((long)rows * cols); \
        st(out, e, r < xRows && c < xCols ? ld(x, (i * xRows + r) * xCols + c) : 0.f); } } \
extern "C" __global__ void linea_unary_##SUF(const T* x, T* out, int n, int op, float lo, float hi) { unary(x, out, n, op, lo, hi); } \
extern "C" __global__ void linea_binary_##SUF(const T* a, const T* b, T* out, int n, int op, int bn, int inner) { \
    binary(a, b, out, n, op, bn, inner); } \
extern "C" __global__ void linea_swiglu_halves_##SUF(const T* x, T* out, int rows, int width) { swiglu_halves(x, out, rows, width); } \
extern "C" __global__ void linea_rotary_##SUF(const T* x, const int* positions, T* out, int tokens, int heads, int headDim, \
    int rotaryDim, float theta, int layout, float factor, float lowFactor, float highFactor, float context) { \
    rotary(x, positions, out, tokens, heads, headDim, rotaryDim, theta, layout, factor, lowFactor, highFactor, context); } \
extern "C" __global__ void linea_conv1d_##SUF(const T* x, const void* w, const void* bias, int wk, T* state, T* out, int batch, \
    int length, int channels, int width, int silu, int p1, int p2) { \
    conv1d(x, w, bias, wk, state, out, batch, length, channels, width, silu, p1, p2); } \
extern "C" __global__ void __launch_bounds__(LINEA_THREADS) linea_softmax_##SUF(const T* x, T* out, int cols) { softmax(x, out, cols); } \
extern "C" __global__ void __launch_bounds__(LINEA_THREADS) linea_route_##SUF(const T* logits, float* weights, int* indices, \
    int experts, int k, int normalize) { route(logits, weights, indices, experts, k, normalize); } \
extern "C" __global__ void __launch_bounds__(LINEA_THREADS) linea_argmax_##SUF(const T* x, int* out, int cols) { argmax(x, out, cols); } \
extern "C" __global__ void __launch_bounds__(LINEA_THREADS) linea_sample_##SUF(const T* logits, const float* u, int* out, int vocab, \
    float temperature, int topK, float topP) { sample(logits, u, out, vocab, temperature, topK, topP); }

LINEA_ENTRIES(f32, float)
LINEA_ENTRIES(bf16, linea_bf16)
LINEA_ENTRIES(f16, linea_f16)
// f32 rows normalized (or SwiGLU'd) straight into the 16-bit input of the matmul that follows: one rounding, as the
// f32 output and a cast would give, without the f32 round trip.
#define LINEA_F32_TO(SUF, TO) \
extern "C" __global__ void __launch_bounds__(LINEA_THREADS) linea_norm_f32_to_##SUF(const float* x, const float* gate, const void* w, \
    int wk, TO* out, int dim, float eps, int mode) { norm(x, gate, w, wk, out, dim, eps, mode); } \
extern "C" __global__ void linea_norm_warp_f32_to_##SUF(const float* x, const float* gate, const void* w, int wk, TO* out, int rows, \
    int dim, float eps, int mode) { norm_warp(x, gate, w, wk, out, rows, dim, eps, mode); } \
extern "C" __global__ void linea_swiglu_halves_f32_to_##SUF(const float* x, TO* out, int rows, int width) { \
    swiglu_halves(x, out, rows, width); }
LINEA_F32_TO(bf16, linea_bf16)
LINEA_F32_TO(f16, linea_f16)

// out [rows, cols] += bias [cols] (the matmul's bias after cuBLAS).
#define LINEA_BIAS(SUF, T) \
extern "C" __global__ void linea_add_bias_##SUF(T* out, const T* bias, int rows, int cols) { \
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < (long)rows * cols; e += (long)gridDim.x * blockDim.x) \
        st(out, e, ld(out, e) + ld(bias, e % cols)); }
LINEA_BIAS(f32, float)
LINEA_BIAS(bf16, linea_bf16)
LINEA_BIAS(f16, linea_f16)

// One thread per element of the box n0 x ... x n5 (leading axes of a smaller rank are 1); strides in elements.
#define LINEA_COPY_STRIDED(N, E) \
extern "C" __global__ void linea_copy_strided_e##N(const E* x, E* out, int count, int n1, int n2, int n3, int n4, int n5, \
    int s0, int s1, int s2, int s3, int s4, int s5, int d0, int d1, int d2, int d3, int d4, int d5) { \
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < count; e += (long)gridDim.x * blockDim.x) { \
        long r = e, src = 0, dst = 0, i; \
        i = r % n5; r /= n5; src += i * s5; dst += i * d5; \
        i = r % n4; r /= n4; src += i * s4; dst += i * d4; \
        i = r % n3; r /= n3; src += i * s3; dst += i * d3; \
        i = r % n2; r /= n2; src += i * s2; dst += i * d2; \
        i = r % n1; r /= n1; src += i * s1; dst += i * d1; \
        out[dst + r * d0] = x[src + r * s0]; } }
LINEA_COPY_STRIDED(1, unsigned char)
LINEA_COPY_STRIDED(2, unsigned short)
LINEA_COPY_STRIDED(4, unsigned int)
LINEA_COPY_STRIDED(8, unsigned long long)

// One block per row of a box n0 x ... x n4 of rows of `width` units each (unit: 1, 2, 4, 8 or 16 bytes, the widest
// that the row length, the strides and both base addresses are multiples of): a strided view whose last axis is
// packed on both sides (a slice of a fused projection) without the per-element index arithmetic above.
#define LINEA_COPY_ROWS(N, E) \
extern "C" __global__ void linea_copy_rows_u##N(const E* x, E* out, int rows, int width, int n1, int n2, int n3, int n4, \
    int s0, int s1, int s2, int s3, int s4, int d0, int d1, int d2, int d3, int d4) { \
    for (int row = blockIdx.x; row < rows; row += gridDim.x) { \
        long r = row, src = 0, dst = 0, i; \
        i = r % n4; r /= n4; src += i * s4; dst += i * d4; \
        i = r % n3; r /= n3; src += i * s3; dst += i * d3; \
        i = r % n2; r /= n2; src += i * s2; dst += i * d2; \
        i = r % n1; r /= n1; src += i * s1; dst += i * d1; \
        src += r * s0; dst += r * d0; \
        for (int c = threadIdx.x; c < width; c += blockDim.x) out[dst + c] = x[src + c]; } }
LINEA_COPY_ROWS(1, unsigned char)
LINEA_COPY_ROWS(2, unsigned short)
LINEA_COPY_ROWS(4, unsigned int)
LINEA_COPY_ROWS(8, unsigned long long)
LINEA_COPY_ROWS(16, uint4)

// Rows of one call may repeat (atomicAdd), so a mixture of experts can add several experts' outputs in one call.
extern "C" __global__ void linea_index_add_f32(const float* values, const int* rows, const float* w, float* target, int n, int dim,
                                               int targetRows, int* bad) {
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < (long)n * dim; e += (long)gridDim.x * blockDim.x) {
        const long i = e / dim, c = e % dim;
        const int row = rows[i];
        if (row < 0 || row >= targetRows) {
            if (c == 0 && bad) atomicMin(bad, (int)i);
        } else {
            atomicAdd(target + (long)row * dim + c, (w ? w[i] : 1.f) * values[e]);
        }
    }
}

// out [n] (DST) = x [n] (SRC), rounded to nearest even: e.g. f32 activations to bf16 for a bf16 cuBLAS GEMM.
#define LINEA_CAST(S, SRC, D, DST) \
extern "C" __global__ void linea_cast_##S##_##D(const SRC* x, DST* out, int n) { \
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) st(out, i, ld(x, i)); }
LINEA_CAST(f32, float, bf16, linea_bf16)
LINEA_CAST(f32, float, f16, linea_f16)
LINEA_CAST(bf16, linea_bf16, f32, float)
LINEA_CAST(f16, linea_f16, f32, float)
LINEA_CAST(bf16, linea_bf16, f16, linea_f16)
LINEA_CAST(f16, linea_f16, bf16, linea_bf16)
