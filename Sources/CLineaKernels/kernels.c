// Instantiates kernel_body.h once per vector width. The register blocks: AVX2 has 16 vector registers, so
// 6 x 16 (12 accumulators, 2 of B, 1 broadcast); AVX-512 has 32 twice as wide, so 12 x 32 (24 accumulators):
// twice the rows per load of B as well as twice the lanes.
#include "linea_kernels.h"

#if defined(__x86_64__)
#define TARGET __attribute__((target("avx2,fma")))
#else
#define TARGET
#endif
#define SUFFIX avx2
#define LANES 8
#define ROWS 6
#define CVECS 2
// No software prefetch in the AVX2 gemv: on a Zen 3 host it slowed the weight stream (mmapped f32 rows, one core:
// 20-21 GB/s without, 16-17 GB/s with 1-8 KiB ahead, T0 or NTA).
#define GEMV_AHEAD 0
#include "kernel_body.h"
#undef TARGET
#undef SUFFIX
#undef LANES
#undef ROWS
#undef CVECS

// 144 queries (a multiple of 6 and 16) x 132 keys (of 6): measured 20% faster than 128 x 256 on one thread.
const linea_kernel_table linea_kernels_avx2 = {
    "avx2", 8, 6, 16, 144, 132, gemm_avx2, softmax_columns_avx2, scaled_by_exp_avx2, exp2_array_avx2, gemv_avx2,
};

#if defined(__x86_64__)
#define TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
#define SUFFIX avx512
#define LANES 16
#define ROWS 12
#define CVECS 2
// The AVX-512 gemv prefetches 4 KiB ahead: on a Zen 5 host the hardware prefetcher stopped at the mmapped weights'
// 4 KiB pages (one core, 120M f32 model: 87 -> 110 tokens/s; non-temporal: 48 -> 51 GB/s on 2 cores).
#define GEMV_AHEAD 4096
#include "kernel_body.h"

static const linea_kernel_table avx512 = {
    "avx512", 16, 12, 32, 192, 132, gemm_avx512, softmax_columns_avx512, scaled_by_exp_avx512, exp2_array_avx512, gemv_avx512,
};

const linea_kernel_table *linea_kernels_avx512(void) { return &avx512; }
#else
const linea_kernel_table *linea_kernels_avx512(void) { return 0; }
#endif
