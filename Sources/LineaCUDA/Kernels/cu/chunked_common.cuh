// Included by the chunked kernels (chunked_*.cu, chunked_gla.cu); NVRTC gets it as a named header (CUDAKernels.headers).
#pragma once
// Linea: device helpers of the chunked kernels (sm_80 or newer).
typedef unsigned short lc_bf16;
template <int N> struct lc_int { static constexpr int value = N; };

// Grouped value heads (fla's GVA: value head h of H reads q/k head h / group, q and k [B,T,H/group,K] with their own
// row stride) are compiled in only with -DLINEA_GVA=1 (CUDAKernels.groupedHeadsOptions: a module of its own, which the
// launchers load when group > 1; each source's `linea-nvrtc-variant` line has scripts/check_kernels.py compile it).
// By default `group` is ignored: q/k head h, and q, k share the row stride of w (delta rules) or g (gla), as the code
// was before grouped heads (same PTX; the grouped addressing cost gated_delta_rule 3-5% on an H100). The kernels write
// `LINEA_GVA ? grouped : plain` inline: through a helper function the plain form compiles to other PTX.
#ifndef LINEA_GVA
#define LINEA_GVA 0
#endif

__device__ __forceinline__ unsigned lc_smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ void lc_cp_async16(unsigned dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void lc_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void lc_cp_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N)); }

// bf16x2 of (lo, hi), round to nearest even; lo lands in the low half (the lower address).
__device__ __forceinline__ unsigned lc_pack(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
// hi = bf16(x), lo = bf16(x - hi) for a pair: hi + lo carries ~16 significant bits.
__device__ __forceinline__ void lc_split(float x0, float x1, unsigned& hi, unsigned& lo) {
    hi = lc_pack(x0, x1);
    lo = lc_pack(x0 - __uint_as_float(hi << 16), x1 - __uint_as_float(hi & 0xffff0000u));
}
__device__ __forceinline__ float lc_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ float lc_bf(lc_bf16 x) { return __uint_as_float(((unsigned)x) << 16); }
// Two consecutive bf16 values (4-byte aligned) as floats.
__device__ __forceinline__ float2 lc_pair(const lc_bf16* p) {
    const unsigned u = *(const unsigned*)p;
    return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
}
__device__ __forceinline__ void lc_mma(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Two n-tiles at once: c0 += a b[0..1], c1 += a b[2..3], with b a k16 x n16 B fragment from lc_ldsm_b.
__device__ __forceinline__ void lc_mma2(float* c0, float* c1, const unsigned* a, const unsigned* b) {
    lc_mma(c0, a, b[0], b[1]);
    lc_mma(c1, a, b[2], b[3]);
}
// hi + lo bf16 fragments of a 16 x 16 fp32 block in shared memory (row stride ld): as the A operand (rows x k), and
// as the B operand [k][n] of two n-tiles (b[0..1] n 0..7, b[2..3] n 8..15, as lc_mma2 takes them) (the WY inverses).
__device__ __forceinline__ void lc_frag_a32(const float* p, int ld, int lane, unsigned* hi, unsigned* lo) {
    const int gq = lane >> 2, tq = lane & 3;
#pragma unroll
    for (int q4 = 0; q4 < 4; ++q4) {
        const float2 x = *(const float2*)(p + (gq + 8 * (q4 & 1)) * ld + 2 * tq + 8 * (q4 >> 1));
        lc_split(x.x, x.y, hi[q4], lo[q4]);
    }
}
__device__ __forceinline__ void lc_frag_b32(const float* p, int ld, int lane, unsigned* hi, unsigned* lo) {
    const int gq = lane >> 2, tq = lane & 3;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float* at = p + (2 * tq + 8 * (i & 1)) * ld + 8 * (i >> 1) + gq;
        lc_split(at[0], at[ld], hi[i], lo[i]);
    }
}
// c0, c1 += a b for hi + lo operands, in three passes (lo x lo dropped).
__device__ __forceinline__ void lc_mma2_x3(float* c0, float* c1, const unsigned* ah, const unsigned* al,
                                           const unsigned* bh, const unsigned* bl) {
    lc_mma2(c0, c1, ah, bh);
    lc_mma2(c0, c1, ah, bl);
    lc_mma2(c0, c1, al, bh);
}
// The hi and lo bf16 A fragments (16 x k16) of two adjacent fp32 accumulator tiles s0, s1 (16 x 8 each): scores
// reused as the left operand of the next product.
__device__ __forceinline__ void lc_split_a(const float* s0, const float* s1, unsigned* hi, unsigned* lo) {
    lc_split(s0[0], s0[1], hi[0], lo[0]);
    lc_split(s0[2], s0[3], hi[1], lo[1]);
    lc_split(s1[0], s1[1], hi[2], lo[2]);
    lc_split(s1[2], s1[3], hi[3], lo[3]);
}
// ldmatrix x4 (and transposed) from a 32-bit shared-memory address (bytes), or from a generic pointer into shared memory.
__device__ __forceinline__ void lc_ldsm(unsigned* r, unsigned a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void lc_ldsm_t(unsigned* r, unsigned a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void lc_ldsm(unsigned* r, const void* p) { lc_ldsm(r, lc_smem_addr(p)); }
__device__ __forceinline__ void lc_ldsm_t(unsigned* r, const void* p) { lc_ldsm_t(r, lc_smem_addr(p)); }
// 32-bit store to a shared-memory address (bytes).
__device__ __forceinline__ void lc_sts(unsigned a, unsigned v) { asm volatile("st.shared.u32 [%0], %1;" :: "r"(a), "r"(v)); }

// Rows [row0, row0 + 64) x COLS columns (bf16 or fp32 elements E) of a matrix with row stride `stride` (elements)
// into shared memory with row stride COLS + 16 / sizeof(E) (16 bytes of padding); rows at or past `limit` are
// zero-filled. 16-byte cp.async copies by the NT threads of the block (blockDim.x must be NT): thread t copies column
// block t % CPR of rows t / CPR + i * ROWS, so the loop unrolls into one address add and one copy per row pass.
template <int COLS, typename E, int NT>
__device__ __forceinline__ void lc_load_tile(E* dst, const E* src, int row0, int limit, long stride) {
    constexpr int PER = 16 / sizeof(E), CPR = COLS / PER, ROWS = NT / CPR;  // elements per copy, copies per row, rows per pass
    static_assert(NT % CPR == 0 && 64 % ROWS == 0, "tile split");
    const int r = threadIdx.x / CPR, cc = threadIdx.x % CPR;
    const E* s = src + (long)(row0 + r) * stride + cc * PER;
    const unsigned d = lc_smem_addr(dst) + (r * (COLS + PER) + cc * PER) * (int)sizeof(E);
#pragma unroll
    for (int i = 0; i < 64 / ROWS; ++i) {
        const bool valid = row0 + r + i * ROWS < limit;
        lc_cp_async16(d + i * ROWS * (COLS + PER) * (int)sizeof(E), valid ? s + i * ROWS * stride : src, valid);
    }
}

// Log gate of token t of (b, h): g [B,T,H] (gate_mode 2), a fixed one per head g [H] (1) or none (0); 0 past the
// end, so cumulative sums stay flat there.
__device__ __forceinline__ float lc_gate(const float* g, int gate_mode, int b, int h, int t, int T, int H) {
    if (t >= T || gate_mode == 0) return 0.f;
    return gate_mode == 1 ? g[h] : g[((long)b * T + t) * H + h];
}

// Inclusive cumulative sum of a chunk's 64 gates (lane holds tokens 2*lane, 2*lane+1) into G[64] (one warp).
__device__ __forceinline__ void lc_cumsum(float g0, float g1, float* G, int lane) {
    float s = g0 + g1;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const float n = __shfl_up_sync(0xffffffffu, s, o);
        if (lane >= o) s += n;
    }
    const float before = s - g0 - g1;
    G[2 * lane] = before + g0;
    G[2 * lane + 1] = before + g0 + g1;
    __syncwarp();
}

// B fragments (k16 x n16: two n-tiles) of a [k][n] bf16 matrix at shared address m (bytes) with row stride ld
// (elements), at (k0, n0); `lane_off` is lc_b_off(ld, lane), the part that depends only on the lane.
__device__ __forceinline__ unsigned lc_b_off(int ld, int lane) {
    return ((((lane >> 3) & 1) * 8 + (lane & 7)) * ld + (lane >> 4) * 8) * 2;
}
__device__ __forceinline__ void lc_ldsm_b(unsigned* r, unsigned m, int ld, int k0, int n0, unsigned lane_off) {
    lc_ldsm_t(r, m + lane_off + (k0 * ld + n0) * 2);
}
