// Linea: device helpers of the mma.sync (m16n8k16, sm_80+) attention kernels, attention_mma.cu and
// attention_block_sparse_mma.cu: base-2 exponent, cp.async 16-byte copies into shared memory with commit / wait,
// bf16 or f16 packing, the MMA itself, ldmatrix (plain and transposed) and a tile load of [rows, D] 16-bit rows into
// shared memory with row stride D + 8.
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
