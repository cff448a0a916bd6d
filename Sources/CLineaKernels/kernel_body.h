// One width's kernels, included once per width by kernels.c with these defined:
//   SUFFIX  name suffix (avx2, avx512)     TARGET  the function attribute that enables the width's instructions
//   LANES   floats per vector               ROWS, CVECS  the gemm's register block: ROWS x (CVECS · LANES) of C
//   QUERY_BLOCK, KEY_BLOCK  flash attention's tile for this block shape
// The code is written once with clang's vector extensions; each width compiles it to its own registers.

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define NAME(x) CAT(x, SUFFIX)
#define VF NAME(vf)
#define VI NAME(vi)
#define INLINE static inline __attribute__((always_inline)) TARGET
// Loops over the register block unrolled in full, so the accumulators stay in registers (not a stack array).
#define UNROLL _Pragma("clang loop unroll(full)")

typedef float VF __attribute__((vector_size(4 * LANES)));
typedef int VI __attribute__((vector_size(4 * LANES)));

INLINE VF NAME(load)(const float *p) { VF v; __builtin_memcpy(&v, p, sizeof v); return v; }
INLINE void NAME(store)(float *p, VF v) { __builtin_memcpy(p, &v, sizeof v); }
INLINE VF NAME(splat)(float x) {
    VF v;  // lane by lane (clang makes it one broadcast); `(VF){} + x` would add a real 0.0 first
    UNROLL for (int i = 0; i < LANES; i++) v[i] = x;
    return v;
}

/// One ROWS x (CVECS·LANES) block of C, held in ROWS·CVECS registers over the whole depth.
INLINE void NAME(block)(long depth, const float *a, long rs, long ds, const float *b, long ldb, float *c,
                        long ldc, int accumulate) {
    VF acc[ROWS][CVECS];
    UNROLL for (int r = 0; r < ROWS; r++)
        UNROLL for (int v = 0; v < CVECS; v++)
            acc[r][v] = accumulate ? NAME(load)(c + r * ldc + v * LANES) : (VF){};
    for (long k = 0; k < depth; k++) {
        VF bv[CVECS];
        UNROLL for (int v = 0; v < CVECS; v++) bv[v] = NAME(load)(b + v * LANES);
        UNROLL for (int r = 0; r < ROWS; r++) {
            VF x = NAME(splat)(a[r * rs]);
            UNROLL for (int v = 0; v < CVECS; v++) acc[r][v] = __builtin_elementwise_fma(x, bv[v], acc[r][v]);
        }
        a += ds;
        b += ldb;
    }
    UNROLL for (int r = 0; r < ROWS; r++)
        UNROLL for (int v = 0; v < CVECS; v++) NAME(store)(c + r * ldc + v * LANES, acc[r][v]);
}

static TARGET void NAME(gemm)(long m, long n, long depth, const float *a, long rs, long ds, const float *b,
                              long ldb, float *c, long ldc, int accumulate, int column_blocks_outside) {
    const long columns = CVECS * LANES, row_blocks = m / ROWS, column_blocks = n / columns;
    // Row blocks outside keep A's rows in L1 while B streams; column blocks outside keep one panel of B there.
    long outer = column_blocks_outside ? column_blocks : row_blocks;
    long inner = column_blocks_outside ? row_blocks : column_blocks;
    for (long x = 0; x < outer; x++)
        for (long y = 0; y < inner; y++) {
            long i = (column_blocks_outside ? y : x) * ROWS, j = (column_blocks_outside ? x : y) * columns;
            NAME(block)(depth, a + i * rs, rs, ds, b + j, ldb, c + i * ldc + j, ldc, accumulate);
        }
}

/// 2^x, relative error below 2e-7; 0 for x <= -127 (and -inf). Degree-6 Taylor polynomial of 2^f, f = x - round(x).
INLINE VF NAME(exp2)(VF x) {
    x = __builtin_elementwise_max(x, NAME(splat)(-127));  // 2^n's exponent field becomes 0, so the result is 0
    const float magic = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits
    VF shifted = x + magic;
    VF f = x - (shifted - magic);  // in [-0.5, 0.5], exact
    VF p = __builtin_elementwise_fma(f, NAME(splat)(1.540353e-4f), NAME(splat)(1.3333558e-3f));
    p = __builtin_elementwise_fma(p, f, NAME(splat)(9.618129e-3f));
    p = __builtin_elementwise_fma(p, f, NAME(splat)(5.550411e-2f));
    p = __builtin_elementwise_fma(p, f, NAME(splat)(0.2402265f));
    p = __builtin_elementwise_fma(p, f, NAME(splat)(0.6931472f));
    p = __builtin_elementwise_fma(p, f, NAME(splat)(1.0f));
    VI n = ((VI)shifted - (VI)NAME(splat)(magic) + 127) << 23;
    return p * (VF)n;
}

/// 2^x for the inner loop, relative error below 5e-7, 0 for x <= -127: a degree-5 minimax polynomial, and the
/// bias 127 folded into the rounding constant so one shift builds 2^round(x).
INLINE VF NAME(exp2_fast)(VF x) {
    x = __builtin_elementwise_max(x, NAME(splat)(-127));
    const float magic = 12583039.0f;  // 1.5·2^23 + 127: the low bits hold round(x) + 127; the rest leave on the shift
    VF shifted = x + magic;
    VF f = x - (shifted - magic);
    VF p = __builtin_elementwise_fma(f, NAME(splat)(1.2915651e-3f), NAME(splat)(9.6685356e-3f));
    p = __builtin_elementwise_fma(p, f, NAME(splat)(5.5516887e-2f));
    p = __builtin_elementwise_fma(p, f, NAME(splat)(0.24022265f));
    p = __builtin_elementwise_fma(p, f, NAME(splat)(0.69314647f));
    p = __builtin_elementwise_fma(p, f, NAME(splat)(1.0f));
    return p * (VF)((VI)shifted << 23);
}

static TARGET void NAME(softmax_columns)(float *scores, long lds, long n, long columns, float *col_max,
                                         float *col_sum, float *acc, long dv_pad, long acc_rows) {
    // CVECS vectors of columns at a time, and rows in pairs: the running max and sum are chains of dependent
    // operations down a column, so four chains side by side keep the vector units busy (one chain ran 2x slower).
    enum { G = CVECS };
    for (long c = 0; c < columns; c += G * LANES) {
        VF new_max[G], shift[G], correction[G], sum0[G], sum1[G];
        UNROLL for (int g = 0; g < G; g++) {
            VF m0 = NAME(load)(col_max + c + g * LANES), m1 = m0;
            long r = 0;
            for (; r + 1 < n; r += 2) {
                m0 = __builtin_elementwise_max(m0, NAME(load)(scores + r * lds + c + g * LANES));
                m1 = __builtin_elementwise_max(m1, NAME(load)(scores + (r + 1) * lds + c + g * LANES));
            }
            if (r < n) m0 = __builtin_elementwise_max(m0, NAME(load)(scores + r * lds + c + g * LANES));
            new_max[g] = __builtin_elementwise_max(m0, m1);
            // A column that has seen no key yet shifts by 0, so 2^(-inf - 0) = 0 instead of NaN.
            shift[g] = (VF)((VI)new_max[g] & ~(new_max[g] == NAME(splat)(-__builtin_inff())));
            correction[g] = NAME(exp2)(NAME(load)(col_max + c + g * LANES) - shift[g]);
            sum0[g] = NAME(load)(col_sum + c + g * LANES) * correction[g];
            sum1[g] = (VF){};
        }
        long r = 0;
        for (; r + 1 < n; r += 2)
            UNROLL for (int g = 0; g < G; g++) {
                float *p0 = scores + r * lds + c + g * LANES, *p1 = p0 + lds;
                VF e0 = NAME(exp2_fast)(NAME(load)(p0) - shift[g]), e1 = NAME(exp2_fast)(NAME(load)(p1) - shift[g]);
                NAME(store)(p0, e0);
                NAME(store)(p1, e1);
                sum0[g] += e0;
                sum1[g] += e1;
            }
        if (r < n)
            UNROLL for (int g = 0; g < G; g++) {
                float *p0 = scores + r * lds + c + g * LANES;
                VF e0 = NAME(exp2_fast)(NAME(load)(p0) - shift[g]);
                NAME(store)(p0, e0);
                sum0[g] += e0;
            }
        float factors[G * LANES];
        UNROLL for (int g = 0; g < G; g++) {
            NAME(store)(col_max + c + g * LANES, new_max[g]);
            NAME(store)(col_sum + c + g * LANES, sum0[g] + sum1[g]);
            NAME(store)(factors + g * LANES, correction[g]);
        }
        // The output rows of these queries, rescaled to the new max (most tiles leave the max, so skip factor 1).
        for (long q = 0; q < G * LANES && c + q < acc_rows; q++) {
            if (factors[q] == 1) continue;
            float *row = acc + (c + q) * dv_pad;
            for (long e = 0; e < dv_pad; e += LANES) NAME(store)(row + e, NAME(load)(row + e) * factors[q]);
        }
    }
}

/// `y[i] = 2^x[i]` for i < n with the softmax's `exp2_fast` (fast != 0) or the rescale's `exp2`; for tests of the
/// formulas the kernels inline. O(n).
static TARGET void NAME(exp2_array)(const float *x, float *y, long n, int fast) {
    for (long i = 0; i < n; i += LANES) {
        long count = n - i < LANES ? n - i : LANES;
        float xt[LANES] = {0}, yt[LANES];
        __builtin_memcpy(xt, x + i, count * sizeof(float));
        NAME(store)(yt, fast ? NAME(exp2_fast)(NAME(load)(xt)) : NAME(exp2)(NAME(load)(xt)));
        __builtin_memcpy(y + i, yt, count * sizeof(float));
    }
}

/// `y[i][c] = x[i][c] · e^(e[i][c] - r[i][c])` for rows i < rows and c < n (row strides in elements; r may be NULL
/// for 0; a stride of 0 repeats one row). The exponent is formed in Float64 and scaled by log2(e) there, so rounding
/// it to Float32 costs what rounding the natural exponent would; then 2^x. O(rows·n).
static TARGET void NAME(scaled_by_exp)(long rows, long n, float *y, long ldy, const float *x, long ldx,
                                       const double *e, long lde, const double *r, long ldr) {
    typedef double VD __attribute__((vector_size(8 * LANES)));
    const double log2e = 1.4426950408889634;
    for (long i = 0; i < rows; i++) {
        float *yi = y + i * ldy;
        const float *xi = x + i * ldx;
        const double *ei = e + i * lde, *ri = r ? r + i * ldr : 0;
        long c = 0;
        for (; c + LANES <= n; c += LANES) {
            VD d, rv = {0};
            __builtin_memcpy(&d, ei + c, sizeof d);
            if (ri) __builtin_memcpy(&rv, ri + c, sizeof rv);
            NAME(store)(yi + c, NAME(load)(xi + c) * NAME(exp2)(__builtin_convertvector((d - rv) * log2e, VF)));
        }
        if (c < n) {  // the last, partial vector through a padded copy, so every element takes the same path
            long count = n - c;
            double dt[LANES] = {0}, rt[LANES] = {0};
            float xt[LANES] = {0}, yt[LANES];
            __builtin_memcpy(dt, ei + c, count * sizeof(double));
            if (ri) __builtin_memcpy(rt, ri + c, count * sizeof(double));
            __builtin_memcpy(xt, xi + c, count * sizeof(float));
            VD d, rv;
            __builtin_memcpy(&d, dt, sizeof d);
            __builtin_memcpy(&rv, rt, sizeof rv);
            NAME(store)(yt, NAME(load)(xt) * NAME(exp2)(__builtin_convertvector((d - rv) * log2e, VF)));
            __builtin_memcpy(yi + c, yt, count * sizeof(float));
        }
    }
}

// ---- Matrix-vector products off nn.Linear's weight rows (decode) ----

typedef unsigned short NAME(vh) __attribute__((vector_size(2 * LANES)));
typedef unsigned int NAME(vu) __attribute__((vector_size(4 * LANES)));

/// LANES bfloat16 values widened exactly to Float32: the bits are a float's high half, so zero-extend and shift.
INLINE VF NAME(load_bf16)(const unsigned short *p) {
    NAME(vh) h;
    __builtin_memcpy(&h, p, sizeof h);
    return (VF)(__builtin_convertvector(h, NAME(vu)) << 16);
}

/// LANES weights from element `offset` of a Float32 (bf16 == 0) or bfloat16 matrix.
INLINE VF NAME(load_weight)(const void *w, int bf16, long offset) {
    return bf16 ? NAME(load_bf16)((const unsigned short *)w + offset) : NAME(load)((const float *)w + offset);
}

/// The sum of the lanes, pairwise.
INLINE float NAME(hsum)(VF v) {
    float t[LANES];
    NAME(store)(t, v);
    UNROLL for (int width = LANES / 2; width >= 1; width /= 2)
        UNROLL for (int l = 0; l < width; l++) t[l] += t[l + width];
    return t[0];
}

/// Output j of the M input rows: one weight row against every input row, U vectors of depth per step so M·U
/// accumulator chains hide the FMA latency. Rows are taken one after another, so the matrix is read as one sequential
/// stream, prefetched (non-temporal) GEMV_AHEAD bytes ahead when the width's instantiation sets it (see kernels.c).
/// The depth's last partial vector goes through zero-padded copies.
INLINE void NAME(gemv_row)(const int M, const int U, long k, const float *x, const void *w, int bf16, long j,
                           float *out, long ldo) {
    const long size = bf16 ? 2 : 4, line_elements = 64 / size;
    const char *row = (const char *)w + j * k * size;
    VF acc[3][4];
    UNROLL for (int i = 0; i < M; i++) UNROLL for (int u = 0; u < U; u++) acc[i][u] = (VF){};
    long d = 0;
    for (; d + U * LANES <= k; d += U * LANES) {
        if (GEMV_AHEAD > 0)
            for (long e = 0; e < U * LANES; e += line_elements) __builtin_prefetch(row + (d + e) * size + GEMV_AHEAD, 0, 0);
        VF wv[4];
        UNROLL for (int u = 0; u < U; u++) wv[u] = NAME(load_weight)(w, bf16, j * k + d + u * LANES);
        UNROLL for (int i = 0; i < M; i++)
            UNROLL for (int u = 0; u < U; u++)
                acc[i][u] = __builtin_elementwise_fma(NAME(load)(x + i * k + d + u * LANES), wv[u], acc[i][u]);
    }
    for (; d + LANES <= k; d += LANES) {
        VF wv = NAME(load_weight)(w, bf16, j * k + d);
        UNROLL for (int i = 0; i < M; i++) acc[i][0] = __builtin_elementwise_fma(NAME(load)(x + i * k + d), wv, acc[i][0]);
    }
    if (d < k) {
        long count = k - d;
        float xt[LANES] = {0}, wt[LANES] = {0};
        if (bf16) {
            unsigned short bits[LANES] = {0};
            __builtin_memcpy(bits, (const unsigned short *)w + j * k + d, count * sizeof(unsigned short));
            NAME(store)(wt, NAME(load_bf16)(bits));
        } else {
            __builtin_memcpy(wt, (const float *)w + j * k + d, count * sizeof(float));
        }
        UNROLL for (int i = 0; i < M; i++) {
            __builtin_memcpy(xt, x + i * k + d, count * sizeof(float));
            acc[i][0] = __builtin_elementwise_fma(NAME(load)(xt), NAME(load)(wt), acc[i][0]);
        }
    }
    UNROLL for (int i = 0; i < M; i++) {
        VF sum = acc[i][0];
        UNROLL for (int u = 1; u < U; u++) sum += acc[i][u];
        out[i * ldo + j] = NAME(hsum)(sum);
    }
}

/// All outputs `[j0, j1)` of M input rows, about four accumulator chains per input row in all.
INLINE void NAME(gemv_rows)(const int M, long j0, long j1, long k, const float *x, const void *w, int bf16, float *out,
                            long ldo) {
    for (long j = j0; j < j1; j++) NAME(gemv_row)(M, M == 1 ? 4 : M == 2 ? 2 : 1, k, x, w, bf16, j, out, ldo);
}

static TARGET void NAME(gemv)(long m, long j0, long j1, long k, const float *x, const void *w, int bf16, float *out,
                              long ldo) {
    // One copy of the loop per (M, dtype), so the accumulators stay in registers and the dtype test leaves the loop.
    switch (m * 2 + (bf16 != 0)) {
    case 2: NAME(gemv_rows)(1, j0, j1, k, x, w, 0, out, ldo); break;
    case 3: NAME(gemv_rows)(1, j0, j1, k, x, w, 1, out, ldo); break;
    case 4: NAME(gemv_rows)(2, j0, j1, k, x, w, 0, out, ldo); break;
    case 5: NAME(gemv_rows)(2, j0, j1, k, x, w, 1, out, ldo); break;
    case 6: NAME(gemv_rows)(3, j0, j1, k, x, w, 0, out, ldo); break;
    case 7: NAME(gemv_rows)(3, j0, j1, k, x, w, 1, out, ldo); break;
    default: break;
    }
}

#undef CAT_
#undef CAT
#undef NAME
#undef VF
#undef VI
#undef INLINE
#undef UNROLL
#undef GEMV_AHEAD
