// The product of bfloat16 activations and bfloat16 weights on CPUs with AVX512-BF16 (Cooper Lake, Sapphire Rapids
// and later, Zen 4 and later): `vdpbf16ps` multiplies 32 bf16 pairs into 16 Float32 sums per instruction, twice the
// multiply-adds of a Float32 FMA, which is what a prefill of bf16 weights is bound by.
#include "linea_kernels.h"
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define INLINE static inline __attribute__((always_inline)) TARGET
#define UNROLL _Pragma("clang loop unroll(full)")

enum {
    MR = 12,       // rows of C per register block: 12 x 2 accumulators + 2 weight vectors of 32 registers
    NR = 32,       // columns of C per register block (two vectors of 16)
    KC = 256,      // depth per packed panel: 32 columns x 256 bf16 = 16 KiB, resident in L1 while all rows stream by
};

int linea_has_bf16_gemm(void) { return 1; }

TARGET void linea_round_bf16(const float *x, uint16_t *y, long rows, long cols, long ldy) {
    for (long r = 0; r < rows; r++) {
        const float *src = x + r * cols;
        uint16_t *dst = y + r * ldy;
        long c = 0;
        for (; c + 16 <= cols; c += 16) {
            __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + c));
            _mm256_storeu_si256((__m256i *)(dst + c), (__m256i)v);
        }
        if (c < cols) {
            __mmask16 mask = (__mmask16)((1u << (cols - c)) - 1);
            __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src + c));
            _mm256_mask_storeu_epi16(dst + c, mask, (__m256i)v);
        }
        for (c = cols; c < ldy; c++) dst[c] = 0;  // the pad of an odd depth multiplies as zero
    }
}

/// Packs columns [n0, n0 + cols) (cols <= NR) of `w [n, k]` at depth [k0, k0 + 2·pairs) into NR-wide pair rows:
/// `pack[p][j] = (w[n0 + j][k0 + 2p], w[n0 + j][k0 + 2p + 1])` as one 32-bit lane, zero past the matrix.
INLINE void pack_panel(const uint16_t *w, long k, long n0, long cols, long k0, long pairs, uint32_t *pack) {
    for (long j = 0; j < NR; j++) {
        if (j >= cols) {
            for (long p = 0; p < pairs; p++) pack[p * NR + j] = 0;
            continue;
        }
        const uint16_t *row = w + (n0 + j) * k + k0;
        long full = (k - k0) / 2 < pairs ? (k - k0) / 2 : pairs;  // pairs with both halves inside the row
        for (long p = 0; p < full; p++) {
            uint32_t pair;
            memcpy(&pair, row + 2 * p, 4);
            pack[p * NR + j] = pair;
        }
        for (long p = full; p < pairs; p++) pack[p * NR + j] = (k0 + 2 * p < k) ? row[2 * p] : 0;
    }
}

/// One mr x NR block of C over `pairs` depth pairs: `x` rows with stride ldx (bf16 elements), the packed panel, and
/// C's first `cols` columns stored (added to C when `accumulate`).
INLINE void block(int mr, long pairs, const uint16_t *x, long ldx, const uint32_t *pack, float *c, long ldc,
                  long cols, int accumulate) {
    __m512 acc[MR][2];
    UNROLL for (int r = 0; r < MR; r++) {
        if (r < mr) { acc[r][0] = _mm512_setzero_ps(); acc[r][1] = _mm512_setzero_ps(); }
    }
    for (long p = 0; p < pairs; p++) {
        __m512bh w0 = (__m512bh)_mm512_load_si512(pack + p * NR);
        __m512bh w1 = (__m512bh)_mm512_load_si512(pack + p * NR + 16);
        UNROLL for (int r = 0; r < MR; r++) {
            if (r < mr) {
                int32_t pair;
                memcpy(&pair, x + r * ldx + 2 * p, 4);
                __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, w0);
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, w1);
            }
        }
    }
    __mmask16 m0 = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
    __mmask16 m1 = cols >= 32 ? 0xffff : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
    UNROLL for (int r = 0; r < MR; r++) {
        if (r < mr) {
            float *row = c + r * ldc;
            if (accumulate) {
                acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_maskz_loadu_ps(m0, row));
                acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_maskz_loadu_ps(m1, row + 16));
            }
            _mm512_mask_storeu_ps(row, m0, acc[r][0]);
            _mm512_mask_storeu_ps(row + 16, m1, acc[r][1]);
        }
    }
}

TARGET void linea_gemm_bf16(long m, long j0, long j1, long k, const uint16_t *x, long ldx, const uint16_t *w,
                            float *out, long ldo) {
    uint32_t pack[KC / 2 * NR] __attribute__((aligned(64)));
    for (long k0 = 0; k0 < k; k0 += KC) {
        long pairs = ((k - k0 < KC ? k - k0 : KC) + 1) / 2;
        for (long n0 = j0; n0 < j1; n0 += NR) {
            long cols = j1 - n0 < NR ? j1 - n0 : NR;
            pack_panel(w, k, n0, cols, k0, pairs, pack);
            long i = 0;
            for (; i + MR <= m; i += MR)
                block(MR, pairs, x + i * ldx + k0, ldx, pack, out + i * ldo + n0, ldo, cols, k0 > 0);
            switch (m - i) {  // the last rows, each count its own unrolled block
#define TAIL(r) case r: block(r, pairs, x + i * ldx + k0, ldx, pack, out + i * ldo + n0, ldo, cols, k0 > 0); break;
                TAIL(1) TAIL(2) TAIL(3) TAIL(4) TAIL(5) TAIL(6) TAIL(7) TAIL(8) TAIL(9) TAIL(10) TAIL(11)
#undef TAIL
                default: break;
            }
        }
    }
}

#else
int linea_has_bf16_gemm(void) { return 0; }
void linea_round_bf16(const float *x, uint16_t *y, long rows, long cols, long ldy) { (void)x; (void)y; (void)rows; (void)cols; (void)ldy; }
void linea_gemm_bf16(long m, long j0, long j1, long k, const uint16_t *x, long ldx, const uint16_t *w, float *out,
                     long ldo) { (void)m; (void)j0; (void)j1; (void)k; (void)x; (void)ldx; (void)w; (void)out; (void)ldo; }
#endif
