#ifndef LINEA_KERNELS_H
#define LINEA_KERNELS_H
#include <stdint.h>
// The hot loops of flash attention (and gla's decayed rows) in one build per vector width (AVX2 + FMA, AVX-512), chosen at run time.
// Swift compiles the whole module for one target CPU (`-target-cpu haswell`); clang can compile single
// functions for another with `__attribute__((target(...)))`, so the wider build lives here, behind one table.

/// `C[m x n] (+)= A[m x depth] · B[depth x n]`: B and C row-major (strides ldb, ldc), A's element (r, d) at
/// `a[r * a_row_stride + d * a_depth_stride]`. Needs m % rows == 0 and n % columns == 0 of the table it comes
/// from. `column_blocks_outside` keeps one panel of B in L1 while A streams. O(m·n·depth).
typedef void (*linea_gemm_fn)(long m, long n, long depth, const float *a, long a_row_stride, long a_depth_stride,
                              const float *b, long ldb, float *c, long ldc, int accumulate,
                              int column_blocks_outside);

/// One key tile of flash attention's online softmax down the columns of `Sᵀ [keys, lds]` (one column per query,
/// scores in log2 units): updates each column's running max and sum, replaces the scores by `2^(s - max)` and
/// rescales rows `[0, acc_rows)` of `acc [., dv_pad]` by `2^(old max - new max)`. Needs columns % columns-of-the-gemm == 0.
/// O(keys·columns + acc_rows·dv_pad).
typedef void (*linea_softmax_fn)(float *scores, long lds, long keys, long columns, float *col_max, float *col_sum,
                                 float *acc, long dv_pad, long acc_rows);

/// `y[i][c] = x[i][c] · e^(e[i][c] - r[i][c])` for i < rows, c < n; row strides in elements, a stride of 0 repeating
/// one row; `r` may be NULL (0). The exponent is formed in Float64. O(rows·n).
typedef void (*linea_scaled_by_exp_fn)(long rows, long n, float *y, long ldy, const float *x, long ldx,
                                       const double *e, long lde, const double *r, long ldr);

/// `y[i] = 2^x[i]` for i < n, through the softmax's degree-5 `exp2_fast` (fast != 0) or the degree-6 `exp2` of the
/// rescale and of `scaled_by_exp`. O(n).
typedef void (*linea_exp2_fn)(const float *x, float *y, long n, int fast);

/// `out[i * ldo + j] = Σ_d x[i * k + d] · w[j * k + d]` for input rows i < m (1 to 3) and outputs j in [j0, j1): the
/// product with an nn.Linear weight `w [n, k]`, Float32 (bf16 == 0) or bfloat16 bits widened exactly, summed in
/// Float32. Reads each weight once for all m rows (decode is bound by streaming the matrix). O(m·(j1 - j0)·k).
typedef void (*linea_gemv_fn)(long m, long j0, long j1, long k, const float *x, const void *w, int bf16, float *out,
                              long ldo);

/// One width's kernels and the shapes they want.
typedef struct {
    const char *name;    ///< "avx2" or "avx512"
    long lanes;          ///< floats per vector register: 8 or 16
    long rows, columns;  ///< the gemm's register block of C
    long query_block, key_block;  ///< flash attention's tile: queries (multiple of rows and columns), keys (of rows)
    linea_gemm_fn gemm;
    linea_softmax_fn softmax_columns;
    linea_scaled_by_exp_fn scaled_by_exp;
    linea_exp2_fn exp2;
    linea_gemv_fn gemv;
} linea_kernel_table;

/// The AVX2 + FMA build (x86-64 since Haswell / Zen 1; off x86-64, the same code for the host's 256-bit vectors).
extern const linea_kernel_table linea_kernels_avx2;
/// The AVX-512 (F, DQ, BW, VL) build, or NULL where this was not compiled for x86-64. Call only where the CPU
/// has AVX-512: elsewhere its instructions fault.
const linea_kernel_table *linea_kernels_avx512(void);

/// 1 where this was compiled for x86-64 with the AVX512-BF16 product below (call it only where the CPU has
/// AVX512-BF16 too), else 0.
int linea_has_bf16_gemm(void);

/// `y[r * ldy + c] = bf16(x[r * cols + c])`, rounded to nearest even (NaN stays NaN), and `y[r * ldy + c] = 0` for
/// cols <= c < ldy. Needs AVX512-BF16. O(rows·ldy).
void linea_round_bf16(const float *x, uint16_t *y, long rows, long cols, long ldy);

/// `out[i * ldo + j] = Σ_d x[i * ldx + d] · w[j * k + d]` for i < m and j in [j0, j1): bf16 inputs (x padded with a
/// zero to an even ldx when k is odd), Float32 sums, through `vdpbf16ps` on 12 x 32 blocks of out with the weight
/// packed 256 deep at a time. Needs AVX512-BF16. O(m·(j1 - j0)·k).
void linea_gemm_bf16(long m, long j0, long j1, long k, const uint16_t *x, long ldx, const uint16_t *w, float *out,
                     long ldo);

#endif
