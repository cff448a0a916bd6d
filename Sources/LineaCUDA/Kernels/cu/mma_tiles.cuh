// Linea: device helpers of the mma.sync (m16n8k16, sm_80+) attention kernels (attention_mma.cu,
// attention_block_sparse_mma.cu, the neighborhood tensor-core kernel): base-2 exponent, cp.async 16-byte copies into
// shared memory with commit / wait, bf16 or f16 packing, the MMA itself, ldmatrix (plain and transposed), a tile load
// of [rows, D] 16-bit rows into shared memory with row stride D + 8; and the flash loop's shared steps: a tile's online
// softmax, the P V product and the epilogue's normalized stores of o and lse. Its includers define LINEA_NEG_INF first.
#pragma once
template <bool B> struct linea_bool { static constexpr bool value = B; };

__device__ __forceinline__ float linea_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ unsigned linea_smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ void linea_cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(linea_smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void linea_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void linea_cp_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N)); }

// F16 selects IEEE half operands (the f16 MMA and conversions) instead of bf16.
template <bool F16> __device__ __forceinline__ unsigned linea_pack(float lo, float hi) {
    unsigned r;
    if (F16) asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    else asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
template <bool F16> __device__ __forceinline__ void linea_mma(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    if (F16)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void linea_ldmatrix_x4(unsigned* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(linea_smem_addr(p)));
}
__device__ __forceinline__ void linea_ldmatrix_x4_trans(unsigned* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(linea_smem_addr(p)));
}

// Copies rows [row0, row0 + rows) of a [*, D] bf16 matrix with row stride `stride` (elements) into shared
// memory with row stride D + 8; rows at or past `limit` are zero-filled.
template <int D>
__device__ __forceinline__ void linea_load_tile(unsigned short* dst, const unsigned short* src, int row0, int rows,
                                                int limit, long stride) {
    constexpr int CPR = D / 8;  // 16-byte chunks per row
    for (int c = threadIdx.x; c < rows * CPR; c += blockDim.x) {
        const int r = c / CPR, cc = c - r * CPR;
        const bool valid = row0 + r < limit;
        const unsigned short* s = valid ? src + (long)(row0 + r) * stride + cc * 8 : src;
        linea_cp_async16(dst + r * (D + 8) + cc * 8, s, valid);
    }
}

// One key tile's online softmax for a warp's WM 16-row subtiles (this thread's rows g and g + 8 of each): the raw
// scores s become probabilities against the running max mRow (log2 units; scale_log2 > 0 folds in the softmax scale),
// the running sums lRow and the output accumulators acc are rescaled by the max's change. A row with no visible key
// so far keeps max -inf and sum 0.
template <int WM, int SN, int NT>
__device__ __forceinline__ void linea_mma_softmax(float (&s)[WM][SN][4], float (&mRow)[WM][2], float (&lRow)[WM][2],
                                                  float (&acc)[WM][NT][4], float scale_log2) {
#pragma unroll
    for (int mi = 0; mi < WM; ++mi) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float mx = LINEA_NEG_INF;
#pragma unroll
            for (int nt = 0; nt < SN; ++nt) mx = fmaxf(mx, fmaxf(s[mi][nt][2 * r], s[mi][nt][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mNew = fmaxf(mRow[mi][r], mx * scale_log2);  // running max, log2 units
            const float mRef = mNew == LINEA_NEG_INF ? 0.f : mNew;
            const float alpha = linea_ex2(mRow[mi][r] - mRef);
            float sum = 0.f;
#pragma unroll
            for (int nt = 0; nt < SN; ++nt) {
                s[mi][nt][2 * r] = linea_ex2(fmaf(s[mi][nt][2 * r], scale_log2, -mRef));
                s[mi][nt][2 * r + 1] = linea_ex2(fmaf(s[mi][nt][2 * r + 1], scale_log2, -mRef));
                sum += s[mi][nt][2 * r] + s[mi][nt][2 * r + 1];
            }
            lRow[mi][r] = lRow[mi][r] * alpha + sum;
            mRow[mi][r] = mNew;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) { acc[mi][nt][2 * r] *= alpha; acc[mi][nt][2 * r + 1] *= alpha; }
        }
    }
}

// acc += P V over one key tile of BN keys: the probabilities s repacked as A fragments (the S accumulators of n-tiles
// 2kk, 2kk+1 are exactly the 16x16 A layout), V's rows from shared memory Vt (row stride LD) by transposed ldmatrix;
// lane addresses row r8 of matrix `mat`.
template <int WM, int SN, int NT, int BN, int LD, bool F16>
__device__ __forceinline__ void linea_mma_pv(const float (&s)[WM][SN][4], const unsigned short* Vt, int mat, int r8,
                                             float (&acc)[WM][NT][4]) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
        unsigned a[WM][4];
#pragma unroll
        for (int mi = 0; mi < WM; ++mi) {
            a[mi][0] = linea_pack<F16>(s[mi][2 * kk][0], s[mi][2 * kk][1]);
            a[mi][1] = linea_pack<F16>(s[mi][2 * kk][2], s[mi][2 * kk][3]);
            a[mi][2] = linea_pack<F16>(s[mi][2 * kk + 1][0], s[mi][2 * kk + 1][1]);
            a[mi][3] = linea_pack<F16>(s[mi][2 * kk + 1][2], s[mi][2 * kk + 1][3]);
        }
        const unsigned short* vrow = Vt + (kk * 16 + (mat & 1) * 8 + r8) * LD + (mat >> 1) * 8;
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
            unsigned bv[4];
            linea_ldmatrix_x4_trans(bv, vrow + np * 16);
#pragma unroll
            for (int mi = 0; mi < WM; ++mi) {
                linea_mma<F16>(acc[mi][2 * np], a[mi], bv[0], bv[1]);
                linea_mma<F16>(acc[mi][2 * np + 1], a[mi], bv[2], bv[3]);
            }
        }
    }
}

// The epilogue: this thread's rows (block rows row0 + mi*16 + g and + 8, query positions below T) of o [B,T,Hq,D]
// normalized by their summed lRow (0 for a row that saw no key), stored as fp32, bf16 or fp16 (out_mode 0/1/2), and
// lse [B,T,Hq] in natural log (-inf for such a row) when lse is given.
template <int WM, int NT, int D>
__device__ __forceinline__ void linea_mma_store(const float (&acc)[WM][NT][4], const float (&mRow)[WM][2], const float (&lRow)[WM][2],
                                                int row0, int g, int t, int T, int Hq, int h, int b, void* o, float* lse, int out_mode) {
#pragma unroll
    for (int mi = 0; mi < WM; ++mi) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float l = lRow[mi][r];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const int i = row0 + mi * 16 + g + r * 8;
            if (i >= T) continue;
            const float inv = l > 0.f ? 1.f / l : 0.f;
            const long base = (((long)b * T + i) * Hq + h) * D;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const int d = nt * 8 + 2 * t;
                const float x0 = acc[mi][nt][2 * r] * inv, x1 = acc[mi][nt][2 * r + 1] * inv;
                if (out_mode == 1) *(unsigned*)((unsigned short*)o + base + d) = linea_pack<false>(x0, x1);
                else if (out_mode == 2) *(unsigned*)((unsigned short*)o + base + d) = linea_pack<true>(x0, x1);
                else *(float2*)((float*)o + base + d) = make_float2(x0, x1);
            }
            if (t == 0 && lse != 0)
                lse[((long)b * T + i) * Hq + h] = l > 0.f ? (mRow[mi][r] + log2f(l)) * 0.69314718055994531f : LINEA_NEG_INF;
        }
    }
}
