// linea-nvrtc-arch: sm_90a
// Linea: flash attention forward for sm_90a (H100). q [B,T,Hq,128], k/v [B,S,Hkv,128] (bf16 or fp16; the first S of kvRows rows per
// sequence);
// o [B,T,Hq,128] fp32 (out_mode 0), bf16 (1) or fp16 (2); lse [B,T,Hq] fp32 (natural log), may be null.
// Masking as in the portable kernel: query i at pos = i + S - T sees j when
// (!causal || j <= pos) && (window <= 0 || j > pos - window); empty rows give o = 0, lse = -inf.
// Needs scale_log2 > 0 (the row max is taken on raw scores). The warp-specialized kernel below also has block-sparse
// entries (linea_attn_wgmma_bsparse_*, at the end): the same loop over the key tiles that a block mask keeps.
//
// Block: 256 threads = 2 warpgroups; warpgroup w owns query rows m0 + 64 w .. + 63. Grid (ceil(T/128), Hq, B),
// query tiles in reverse, so the heaviest causal tiles of a head start first and the blocks running together
// share their heads' K/V in L2.
// Shared memory (dynamic, 1024-aligned): Q [128 x 128], then 3 stages of K [128 x 128], then 3 of V, every
// tile stored as two 64-column halves of [rows][128 bytes] with the 16-byte chunks of row r XOR-ed by r % 8
// (the wgmma 128B swizzle). K is the K-major B operand of S = Q K^T; V, same layout, the N-major (transposed)
// B operand of O += P V.
// Loop over key tiles `it`, one barrier per step (K_it and V_it-1 have landed, every thread is done with step
// it - 1), copies two tiles ahead (K_it+2, V_it+1). Each warpgroup overlaps its softmax with tensor-core work:
// the leading warpgroup issues S = Q K_it^T and O += P_it-1 V_it-1, waits for S only, does the softmax of S while
// P V runs, then rescales O and converts S to the bf16/fp16 A operand P_it. With LINEA_WG_SKEW = 1 the second
// warpgroup runs half a step behind: it first does the softmax of the S it computed last step (while the first
// warpgroup's GEMMs keep the tensor cores busy), then issues its S_it and P_it-1 V_it-1, which queue behind them,
// so the two warpgroups' exponentials and the tensor cores overlap (the ping-pong of FlashAttention-3, kept
// in lock step by the one barrier). LINEA_WG_SKEW = 0 (the default) runs both warpgroups like the leading one: measured faster
// on H100 (T = 2048 / 8192 / 32768 causal: 0.929 / 2.88 / 10.28 ms vs 0.958 / 2.96 / 10.58 ms skewed).
#ifndef LINEA_WG_SKEW
#define LINEA_WG_SKEW 0
#endif
#define LINEA_NEG_INF (__int_as_float(0xff800000))
#define LINEA_WG_BM 128
#define LINEA_WG_BN 128
#define LINEA_WG_D 128
#define LINEA_WG_TILE (128 * 128 * 2)
#include "block_bits.cuh"

__device__ __forceinline__ float linea_wg_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ unsigned linea_wg_smem(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void linea_wg_cp16(unsigned dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void linea_wg_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void linea_wg_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
__device__ __forceinline__ void linea_wg_fence_proxy() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void linea_wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void linea_wg_commit_group() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void linea_wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(N) : "memory");
}
// Keeps the compiler from moving reads or writes of a wgmma accumulator across the waits above.
__device__ __forceinline__ void linea_wg_touch(float& x) { asm volatile("" : "+f"(x) :: "memory"); }

// Shared-memory matrix descriptor: start address, leading and stride byte offsets, 128B swizzle (type 1).
__device__ __forceinline__ unsigned long long linea_wg_desc(unsigned addr, unsigned lbo, unsigned sbo) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | ((unsigned long long)(lbo >> 4) << 16)
         | ((unsigned long long)(sbo >> 4) << 32) | (1ull << 62);
}

template <bool F16> __device__ __forceinline__ unsigned linea_wg_pack(float lo, float hi) {
    unsigned r;
    if (F16) asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    else asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ void linea_wg_ss_bf16(float* d, unsigned long long da, unsigned long long db, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(da), "l"(db), "r"(accumulate));
}
__device__ __forceinline__ void linea_wg_rs0_bf16(float* d, const unsigned* a, unsigned long long db, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
__device__ __forceinline__ void linea_wg_rs1_bf16(float* d, const unsigned* a, unsigned long long db, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
__device__ __forceinline__ void linea_wg_ss_f16(float* d, unsigned long long da, unsigned long long db, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(da), "l"(db), "r"(accumulate));
}
__device__ __forceinline__ void linea_wg_rs0_f16(float* d, const unsigned* a, unsigned long long db, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
__device__ __forceinline__ void linea_wg_rs1_f16(float* d, const unsigned* a, unsigned long long db, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
template <bool F16> __device__ __forceinline__ void linea_wg_ss(float* d, unsigned long long da, unsigned long long db, int acc) {
    if (F16) linea_wg_ss_f16(d, da, db, acc); else linea_wg_ss_bf16(d, da, db, acc);
}
// A from registers; TB = 1 reads B as N-major (V), TB = 0 as K-major (K).
template <bool F16, int TB> __device__ __forceinline__ void linea_wg_rs(float* d, const unsigned* a, unsigned long long db, int acc) {
    if (TB) { if (F16) linea_wg_rs1_f16(d, a, db, acc); else linea_wg_rs1_bf16(d, a, db, acc); }
    else { if (F16) linea_wg_rs0_f16(d, a, db, acc); else linea_wg_rs0_bf16(d, a, db, acc); }
}

// Copies rows [row0, row0 + 128) of a [*, 128] 16-bit matrix (row stride `stride` elements) into a swizzled tile
// at shared address `dst`; rows at or past `limit` are zero-filled. Thread t copies the 16-byte chunk t % 16 of
// rows t / 16 + 16 i (i < 8): its swizzled chunk slot is the same for all eight rows (row % 8 is fixed), so a
// full tile costs one address add per copy.
__device__ __forceinline__ void linea_wg_load(unsigned dst, const unsigned short* src, int row0, int limit, long stride) {
    const int r0 = threadIdx.x >> 4, ch = threadIdx.x & 15;
    const unsigned d0 = dst + (ch >> 3) * (128 * 128) + r0 * 128 + (((ch & 7) ^ (r0 & 7)) << 4);
    const unsigned short* s0 = src + (long)(row0 + r0) * stride + ch * 8;
    const long step = 16 * stride;
    if (row0 + 128 <= limit) {
#pragma unroll
        for (int i = 0; i < 8; ++i)
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(d0 + 2048 * i), "l"(s0 + i * step));
    } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const bool valid = row0 + r0 + 16 * i < limit;
            linea_wg_cp16(d0 + 2048 * i, valid ? s0 + i * step : src, valid);
        }
    }
}

// Masked online softmax of one 64 x 128 score tile held as wgmma accumulators (raw scores in, probabilities out,
// log2 units): updates the running max and sum of this thread's two rows and returns their rescale factors.
__device__ __forceinline__ void linea_wg_softmax(
    float* sacc, float* mRow, float* lRow, float* alpha, bool needMask, int n0, int posA, int tq, int S, int causal,
    int window, float scale_log2)
{
    if (needMask) {
#pragma unroll
        for (int j = 0; j < 16; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int col = n0 + 8 * j + 2 * tq + (e & 1);
                const int pos = posA + 8 * (e >> 1);
                const bool visible = col < S && (!causal || col <= pos) && (window <= 0 || col > pos - window);
                if (!visible) sacc[4 * j + e] = LINEA_NEG_INF;
            }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float mx = LINEA_NEG_INF;
#pragma unroll
        for (int j = 0; j < 16; ++j) mx = fmaxf(mx, fmaxf(sacc[4 * j + 2 * r], sacc[4 * j + 2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mNew = fmaxf(mRow[r], mx * scale_log2);  // running max, log2 units
        const float mRef = mNew == LINEA_NEG_INF ? 0.f : mNew;
        alpha[r] = linea_wg_ex2(mRow[r] - mRef);
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            sacc[4 * j + 2 * r] = linea_wg_ex2(fmaf(sacc[4 * j + 2 * r], scale_log2, -mRef));
            sacc[4 * j + 2 * r + 1] = linea_wg_ex2(fmaf(sacc[4 * j + 2 * r + 1], scale_log2, -mRef));
            sum += sacc[4 * j + 2 * r] + sacc[4 * j + 2 * r + 1];
        }
        lRow[r] = lRow[r] * alpha[r] + sum;
        mRow[r] = mNew;
    }
}

// O *= alpha (per row), then P = S as bf16/fp16 A fragments: k-step kk covers accumulator n-tiles 2 kk, 2 kk + 1
// (the m16n8k16 A layout, per warp).
template <bool F16>
__device__ __forceinline__ void linea_wg_rescale_pack(float* oacc, const float* sacc, unsigned* pa, const float* alpha) {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        oacc[4 * j] *= alpha[0]; oacc[4 * j + 1] *= alpha[0];
        oacc[4 * j + 2] *= alpha[1]; oacc[4 * j + 3] *= alpha[1];
    }
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
        pa[4 * kk + 0] = linea_wg_pack<F16>(sacc[8 * kk + 0], sacc[8 * kk + 1]);
        pa[4 * kk + 1] = linea_wg_pack<F16>(sacc[8 * kk + 2], sacc[8 * kk + 3]);
        pa[4 * kk + 2] = linea_wg_pack<F16>(sacc[8 * kk + 4], sacc[8 * kk + 5]);
        pa[4 * kk + 3] = linea_wg_pack<F16>(sacc[8 * kk + 6], sacc[8 * kk + 7]);
    }
}

// Epilogue: o = O / l for this thread's two rows (bf16, fp16 or fp32 by out_mode), lse in natural log.
__device__ __forceinline__ void linea_wg_store(
    const float* oacc, const float* mRow, const float* lRow, void* __restrict__ o, float* __restrict__ lse, int rowA,
    int tq, int b, int h, int T, int Hq, int out_mode)
{
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float l = lRow[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const int i = rowA + 8 * r;
        if (i >= T) continue;
        const float inv = l > 0.f ? 1.f / l : 0.f;
        const long obase = (((long)b * T + i) * Hq + h) * LINEA_WG_D;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            const int d = 8 * j + 2 * tq;
            const float x0 = oacc[4 * j + 2 * r] * inv, x1 = oacc[4 * j + 2 * r + 1] * inv;
            if (out_mode == 1) *(unsigned*)((unsigned short*)o + obase + d) = linea_wg_pack<false>(x0, x1);
            else if (out_mode == 2) *(unsigned*)((unsigned short*)o + obase + d) = linea_wg_pack<true>(x0, x1);
            else *(float2*)((float*)o + obase + d) = make_float2(x0, x1);
        }
        if (tq == 0 && lse != 0)
            lse[((long)b * T + i) * Hq + h] = l > 0.f ? (mRow[r] + log2f(l)) * 0.69314718055994531f : LINEA_NEG_INF;
    }
}

template <bool F16>
__device__ __forceinline__ void linea_attn_wgmma(
    const unsigned short* __restrict__ q, const unsigned short* __restrict__ k, const unsigned short* __restrict__ v,
    void* __restrict__ o, float* __restrict__ lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_mode, int kvRows)
{
    extern __shared__ __align__(1024) unsigned char linea_wg_smem_raw[];
    const unsigned base = (linea_wg_smem(linea_wg_smem_raw) + 1023u) & ~1023u;
    // Q, then K stages 0-2, then V stages 0-2.
    const unsigned Qs = base, Ks = base + LINEA_WG_TILE, Vs = base + 4 * LINEA_WG_TILE;
    const int tid = threadIdx.x, wg = tid >> 7, wtid = tid & 127, warp = wtid >> 5, lane = tid & 31;
    const int g = lane >> 2, tq = lane & 3;
    const int m0 = (gridDim.x - 1 - blockIdx.x) * LINEA_WG_BM;  // heaviest causal tiles of each head first
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (Hq / Hkv);
    const long qStride = (long)Hq * LINEA_WG_D, kStride = (long)Hkv * LINEA_WG_D;
    const unsigned short* qb = q + (long)b * T * qStride + (long)h * LINEA_WG_D;
    const unsigned short* kb = k + (long)b * kvRows * kStride + (long)hk * LINEA_WG_D;
    const unsigned short* vb = v + (long)b * kvRows * kStride + (long)hk * LINEA_WG_D;

    const int shift = S - T;
    const int lastRow = min(m0 + LINEA_WG_BM, T) - 1;
    int nBegin = 0, nEnd = S;
    if (causal) nEnd = max(0, min(S, lastRow + shift + 1));
    if (window > 0) nBegin = max(0, m0 + shift - window + 1);
    const int tiles = nEnd > nBegin ? (nEnd - nBegin + LINEA_WG_BN - 1) / LINEA_WG_BN : 0;

    // Copy groups: {Q, K_0}, {K_1, V_0}, then one group per tile `it`: {K_it+2, V_it+1} (possibly empty).
    // At the top of step it every group but the newest has landed: that holds K_it and V_it-1.
    linea_wg_load(Qs, qb, m0, T, qStride);
    if (tiles > 0) linea_wg_load(Ks, kb, nBegin, S, kStride);
    linea_wg_commit();
    if (tiles > 1) linea_wg_load(Ks + LINEA_WG_TILE, kb, nBegin + LINEA_WG_BN, S, kStride);
    if (tiles > 0) linea_wg_load(Vs, vb, nBegin, S, kStride);
    linea_wg_commit();

    // This thread's rows: rowA = m0 + 64 wg + 16 warp + g and rowA + 8; accumulator element (j, e) of an
    // m64n128 result is row rowA + 8 (e >> 1), column 8 j + 2 tq + (e & 1).
    const int rowA = m0 + 64 * wg + 16 * warp + g;
    const int posA = rowA + shift;
    const int wgPosLo = m0 + 64 * wg + shift, wgPosHi = wgPosLo + 63;
    float oacc[64], sacc[64];
    unsigned pa[32];
#pragma unroll
    for (int i = 0; i < 64; ++i) oacc[i] = 0.f;
#pragma unroll
    for (int i = 0; i < 32; ++i) pa[i] = 0u;
    float mRow[2] = {LINEA_NEG_INF, LINEA_NEG_INF}, lRow[2] = {0.f, 0.f}, alpha[2];
    const unsigned qRows = Qs + wg * 64 * 128;  // this warpgroup's 64 rows within each 64-column half
    const bool lagging = LINEA_WG_SKEW && wg == 1;

    // Step it < tiles brings tile it; step `tiles` drains the last P V.
    for (int it = 0; it <= tiles; ++it) {
        const bool fresh = it < tiles;
        const int n0 = nBegin + it * LINEA_WG_BN;
        if (fresh) asm volatile("cp.async.wait_group 1;\n" ::: "memory");
        else asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        linea_wg_fence_proxy();
        __syncthreads();  // K_it, V_it-1 visible; every thread is done with step it - 1 and its GEMMs
        const unsigned Kt = Ks + (it % 3) * LINEA_WG_TILE;
        const unsigned Vp = Vs + ((it + 2) % 3) * LINEA_WG_TILE;  // V_it-1
        // Copies for later tiles: K_it+2 into the stage of K_it-1, V_it+1 into the stage of V_it-2 (both read by
        // GEMMs that finished before the barrier above). Issued between a GEMM issue and its wait, ptxas
        // serializes the wgmma pipeline (C7514), so each role issues them elsewhere.
        auto issueLoads = [&]() {
            if (it + 2 < tiles) linea_wg_load(Ks + ((it + 2) % 3) * LINEA_WG_TILE, kb, n0 + 2 * LINEA_WG_BN, S, kStride);
            if (it + 1 < tiles) linea_wg_load(Vs + ((it + 1) % 3) * LINEA_WG_TILE, vb, n0 + LINEA_WG_BN, S, kStride);
            linea_wg_commit();
        };
        auto issueS = [&]() {  // S = Q K_it^T: k-step ks lies in half ks / 4 at byte 32 (ks % 4) of each row
#pragma unroll
            for (int ks = 0; ks < 8; ++ks) {
                const unsigned off = (ks >> 2) * (128 * 128) + (ks & 3) * 32;
                linea_wg_ss<F16>(sacc, linea_wg_desc(qRows + off, 16, 1024), linea_wg_desc(Kt + off, 16, 1024), ks > 0);
            }
            linea_wg_commit_group();
        };
        auto issuePV = [&]() {  // O += P V_it-1: k-step kk takes keys 16 kk.. (2048 bytes on); LBO = one 64-column half
#pragma unroll
            for (int kk = 0; kk < 8; ++kk)
                linea_wg_rs<F16, 1>(oacc, pa + 4 * kk, linea_wg_desc(Vp + kk * 2048, 128 * 128, 1024), 1);
            linea_wg_commit_group();
        };
        if (!lagging) {
            // Leading warpgroup: issue S_it and P_it-1 V_it-1 first; softmax of S_it runs while P V is on the tensor cores.
            if (fresh) {
                linea_wg_fence();
                issueS();
                if (it > 0) { issuePV(); linea_wg_wait<1>(); } else linea_wg_wait<0>();
#pragma unroll
                for (int i = 0; i < 64; ++i) linea_wg_touch(sacc[i]);
                issueLoads();
                const bool needMask = (n0 + LINEA_WG_BN > S) || (causal && n0 + LINEA_WG_BN - 1 > wgPosLo) ||
                                      (window > 0 && n0 <= wgPosHi - window);
                linea_wg_softmax(sacc, mRow, lRow, alpha, needMask, n0, posA, tq, S, causal, window, scale_log2);
                linea_wg_wait<0>();
#pragma unroll
                for (int i = 0; i < 64; ++i) linea_wg_touch(oacc[i]);
                linea_wg_rescale_pack<F16>(oacc, sacc, pa, alpha);
            } else if (it > 0) {
                linea_wg_fence();
                issuePV();
                linea_wg_wait<0>();
#pragma unroll
                for (int i = 0; i < 64; ++i) linea_wg_touch(oacc[i]);
            }
        } else {
            // Lagging warpgroup (LINEA_WG_SKEW): softmax of S_it-1 (computed last step) while the leading warpgroup's
            // GEMMs run, then issue S_it and P_it-1 V_it-1, which queue behind them; wait before the next barrier.
            if (it > 0) {
                const int p0 = n0 - LINEA_WG_BN;
                const bool needMask = (p0 + LINEA_WG_BN > S) || (causal && p0 + LINEA_WG_BN - 1 > wgPosLo) ||
                                      (window > 0 && p0 <= wgPosHi - window);
                linea_wg_softmax(sacc, mRow, lRow, alpha, needMask, p0, posA, tq, S, causal, window, scale_log2);
                linea_wg_rescale_pack<F16>(oacc, sacc, pa, alpha);
            }
            if (fresh) issueLoads();
            linea_wg_fence();
            if (fresh) issueS();
            if (it > 0) issuePV();
            linea_wg_wait<0>();
#pragma unroll
            for (int i = 0; i < 64; ++i) { linea_wg_touch(sacc[i]); linea_wg_touch(oacc[i]); }
        }
    }

    linea_wg_store(oacc, mRow, lRow, o, lse, rowA, tq, b, h, T, Hq, out_mode);
}

// ---- Warp-specialized variant (v7, entries linea_attn_wgmma_ws_*, the default): 384 threads = 2 consumer warpgroups
// + 1 producer warpgroup (setmaxnreg moves its registers to the consumers), one-dimensional grid of work items
// (query tile, head, batch), see linea_wg_item: one block per item, or a persistent grid walking them. The producer
// copies each item's Q, then K_it and V_it into 3-stage rings with cp.async; each producer thread's
// `cp.async.mbarrier.arrive.noinc` completes the stage's "full" mbarrier (128 arrivals) when its copies land, so no
// consumer waits on copies it issued, and copies run up to 3 tiles ahead (across items too: the next item's Q comes
// in once the last S of the current one has completed, while it drains and stores). Consumers release a stage on
// its "empty" mbarrier (one arrival per consumer warp) once the GEMMs that read it have completed. No block-wide
// barrier in the loop: with LINEA_WG_PINGPONG = 1 the two warpgroups take turns issuing their GEMMs (named barriers
// 1 and 2, 256 threads), so one warpgroup's softmax runs while the other's GEMMs hold the tensor cores
// (FlashAttention-3's schedule). Same math, masks, outputs and shared memory as the kernel above.
#ifndef LINEA_WG_PINGPONG
#define LINEA_WG_PINGPONG 1
#endif
// Registers per thread after setmaxnreg: 128 x PRODUCER + 256 x CONSUMER <= 65536.
#ifndef LINEA_WG_PRODUCER_REGS
#define LINEA_WG_PRODUCER_REGS 40
#endif
#ifndef LINEA_WG_CONSUMER_REGS
#define LINEA_WG_CONSUMER_REGS 232
#endif
__device__ __forceinline__ void linea_wg_mbar_init(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void linea_wg_mbar_wait(unsigned bar, unsigned parity) {
    asm volatile("{\n.reg .pred done;\nLINEA_MBAR_WAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra LINEA_MBAR_WAIT;\n}\n" :: "r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ void linea_wg_mbar_arrive(unsigned bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" :: "r"(bar) : "memory");
}
// Arrives on `bar` once every cp.async this thread issued so far has landed.
__device__ __forceinline__ void linea_wg_mbar_arrive_copies(unsigned bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" :: "r"(bar) : "memory");
}
__device__ __forceinline__ void linea_wg_bar_sync(int id) { asm volatile("bar.sync %0, 256;\n" :: "r"(id) : "memory"); }
__device__ __forceinline__ void linea_wg_bar_arrive(int id) { asm volatile("bar.arrive %0, 256;\n" :: "r"(id)); }

// linea_wg_load for the producer warpgroup (128 threads): thread p copies chunk p % 16 of rows p / 16 + 8 i (i < 16).
__device__ __forceinline__ void linea_wg_load_wg(unsigned dst, const unsigned short* src, int row0, int limit, long stride, int p) {
    const int r0 = p >> 4, ch = p & 15;
    const unsigned d0 = dst + (ch >> 3) * (128 * 128) + r0 * 128 + (((ch & 7) ^ r0) << 4);
    const unsigned short* s0 = src + (long)(row0 + r0) * stride + ch * 8;
    const long step = 8 * stride;
    if (row0 + 128 <= limit) {
#pragma unroll
        for (int i = 0; i < 16; ++i)
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(d0 + 1024 * i), "l"(s0 + i * step));
    } else {
#pragma unroll
        for (int i = 0; i < 16; ++i) {
            const bool valid = row0 + r0 + 8 * i < limit;
            linea_wg_cp16(d0 + 1024 * i, valid ? s0 + i * step : src, valid);
        }
    }
}

// Work item `round` of this block: item L = round P + (x, or P - 1 - x on odd rounds) of the P = gridDim.x blocks
// (a grid of one block per item takes one item each; a persistent grid walks items in a snake so that heavy and
// light rounds even out). Items come in groups of G (batch, head) pairs, heaviest causal query tile first within a
// group (so that the blocks running together share a few heads' K/V in L2): rank r of group grp is pair
// grp G + r % Gp, query tile nT - 1 - r / Gp. Sets the query tile start m0, head, batch and key-tile range;
// returns false past the last item.
__device__ __forceinline__ bool linea_wg_item(
    int round, int nT, int pairs, int G, int Hq, int T, int S, int causal, int window, int& m0, int& h, int& b,
    int& nBegin, int& tiles)
{
    const int P = gridDim.x, x = blockIdx.x;
    const int L = round * P + ((round & 1) ? P - 1 - x : x);
    if (L >= nT * pairs) return false;
    const int grp = L / (G * nT), rank = L - grp * G * nT;
    const int gp = min(G, pairs - grp * G);
    const int pair = grp * G + rank % gp;
    m0 = (nT - 1 - rank / gp) * LINEA_WG_BM;
    b = pair / Hq; h = pair - b * Hq;
    const int shift = S - T, lastRow = min(m0 + LINEA_WG_BM, T) - 1;
    int nEnd = S;
    nBegin = 0;
    if (causal) nEnd = max(0, min(S, lastRow + shift + 1));
    if (window > 0) nBegin = max(0, m0 + shift - window + 1);
    tiles = nEnd > nBegin ? (nEnd - nBegin + LINEA_WG_BN - 1) / LINEA_WG_BN : 0;
    return true;
}

// Block-sparse walk (SPARSE entries): the key tiles of an item are those of the key blocks its query block keeps,
// read from a bitmask of kept key blocks that the whole block builds in shared memory before the roles split.
// Mask blocks are bm x bn with bm, bn multiples of 128, so an item's rows lie in one query block and a key tile in
// one key block; the launch is one block per item (not persistent: the bitmask is the item's).
#define LINEA_WG_SPARSE_WORDS 256  // bitmask words: at most 8192 key blocks (the host checks)
struct LineaWgSparse {
    const unsigned char* mask;  // uint8 [Bm, Hm, QB, KB], strides maskB, maskH (0 for a broadcast dimension)
    int bm, bn, maskB, maskH, KB;
};
// The first key of the kept tile after tile n0 (n0 < 0: the first kept tile), or -1 past the last: the next tile of
// n0's key block if it holds one below nEnd, else the first tile of the next set bit of `bits` below cbEnd.
__device__ __forceinline__ int linea_wg_next_tile(const unsigned* bits, int n0, int bn, int cbEnd, int nEnd) {
    int c = 0;
    if (n0 >= 0) {
        const int cb = n0 / bn;
        if ((long)n0 + LINEA_WG_BN < min((long)nEnd, (long)(cb + 1) * bn)) return n0 + LINEA_WG_BN;
        c = cb + 1;
    }
    const int kept = linea_next_set_bit(bits, c, cbEnd);
    return kept < 0 ? -1 : kept * bn;
}

template <bool F16, bool SPARSE>
__device__ __forceinline__ void linea_attn_wgmma_ws(
    const unsigned short* __restrict__ q, const unsigned short* __restrict__ k, const unsigned short* __restrict__ v,
    void* __restrict__ o, float* __restrict__ lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_mode, int B, int G, int kvRows,
    LineaWgSparse sp = LineaWgSparse())
{
    extern __shared__ __align__(1024) unsigned char linea_wg_smem_raw[];
    __shared__ __align__(8) unsigned long long linea_wg_bars[14];
    __shared__ unsigned linea_wg_bits[SPARSE ? LINEA_WG_SPARSE_WORDS + 1 : 1];  // kept key blocks, then their count
    const unsigned base = (linea_wg_smem(linea_wg_smem_raw) + 1023u) & ~1023u;
    const unsigned Qs = base, Ks = base + LINEA_WG_TILE, Vs = base + 4 * LINEA_WG_TILE;
    // mbarriers (8 bytes each): Q full, K full [3], V full [3], K empty [3], V empty [3], Q empty. The K and V rings
    // run on across the block's items: key tile c (counted over all of them) sits in stage c % 3, fill c / 3.
    const unsigned barQ = linea_wg_smem(linea_wg_bars), barKf = barQ + 8, barVf = barQ + 32, barKe = barQ + 56,
                   barVe = barQ + 80, barQe = barQ + 104;
    // The warpgroup index through a shuffle, so that the compiler knows it is warp-uniform (wgmma in uniform branches).
    const int tid = threadIdx.x, wg = __shfl_sync(0xffffffffu, tid >> 7, 0), wtid = tid & 127, warp = wtid >> 5;
    const int lane = tid & 31, g = lane >> 2, tq = lane & 3;
    const int nT = (T + LINEA_WG_BM - 1) / LINEA_WG_BM, pairs = B * Hq, group = Hq / Hkv;
    const long qStride = (long)Hq * LINEA_WG_D, kStride = (long)Hkv * LINEA_WG_D;
    const int shift = S - T;

    if (tid == 0) {
        linea_wg_mbar_init(barQ, 128);
        linea_wg_mbar_init(barQe, 8);
        for (int s = 0; s < 3; ++s) {
            linea_wg_mbar_init(barKf + 8 * s, 128); linea_wg_mbar_init(barVf + 8 * s, 128);
            linea_wg_mbar_init(barKe + 8 * s, 8); linea_wg_mbar_init(barVe + 8 * s, 8);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        if (SPARSE) linea_wg_bits[LINEA_WG_SPARSE_WORDS] = 0u;
    }
    __syncthreads();

    int m0, h, b, nBegin, tiles;
    // Sparse: the item's kept key blocks below cbEnd (causal: past the last row's position nothing is visible), 32 per
    // ballot, and its tile count: bn / 128 per kept block, fewer in the block that holds key nEnd - 1.
    int nEnd = S, cbEnd = 0;
    if (SPARSE) {
        if (!linea_wg_item(0, nT, pairs, G, Hq, T, S, causal, 0, m0, h, b, nBegin, tiles)) return;  // a grid past the items
        nEnd = causal ? max(0, min(S, min(m0 + LINEA_WG_BM, T) + shift)) : S;
        cbEnd = nEnd > 0 ? (nEnd - 1) / sp.bn + 1 : 0;
        const unsigned char* row = sp.mask + (long)b * sp.maskB + (long)h * sp.maskH + (long)(m0 / sp.bm) * sp.KB;
        for (int w = tid >> 5; w * 32 < cbEnd; w += 12) {
            const int c = w * 32 + lane;
            const unsigned word = __ballot_sync(0xffffffffu, c < cbEnd && row[c] != 0);
            if (lane == 0) { linea_wg_bits[w] = word; atomicAdd(&linea_wg_bits[LINEA_WG_SPARSE_WORDS], __popc(word)); }
        }
        __syncthreads();
        const int perBlock = sp.bn / LINEA_WG_BN, last = cbEnd - 1;
        tiles = (int)linea_wg_bits[LINEA_WG_SPARSE_WORDS] * perBlock;
        if (last >= 0 && ((linea_wg_bits[last >> 5] >> (last & 31)) & 1u))
            tiles -= perBlock - (nEnd - last * sp.bn + LINEA_WG_BN - 1) / LINEA_WG_BN;
    }
    if (wg == 2) {
        // Producer warpgroup: Q of item r waits for the release of item r - 1's Q (after its last S); fill n of a
        // K or V stage waits for release n - 1 of that stage.
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" :: "n"(LINEA_WG_PRODUCER_REGS));
        int c0 = 0;
        for (int round = 0; SPARSE ? round == 0 : linea_wg_item(round, nT, pairs, G, Hq, T, S, causal, window, m0, h, b, nBegin, tiles); ++round) {
            const unsigned short* kb = k + (long)b * kvRows * kStride + (long)(h / group) * LINEA_WG_D;
            const unsigned short* vb = v + (long)b * kvRows * kStride + (long)(h / group) * LINEA_WG_D;
            if (round > 0) linea_wg_mbar_wait(barQe, (round - 1) & 1);
            linea_wg_load_wg(Qs, q + (long)b * T * qStride + (long)h * LINEA_WG_D, m0, T, qStride, wtid);
            linea_wg_mbar_arrive_copies(barQ);
            int n0 = SPARSE ? linea_wg_next_tile(linea_wg_bits, -1, sp.bn, cbEnd, nEnd) : nBegin;
            for (int it = 0; it < tiles; ++it, n0 = SPARSE ? linea_wg_next_tile(linea_wg_bits, n0, sp.bn, cbEnd, nEnd) : n0 + LINEA_WG_BN) {
                const int c = c0 + it, s = c % 3;
                const unsigned parity = ((c / 3) & 1) ^ 1;
                if (c >= 3) linea_wg_mbar_wait(barKe + 8 * s, parity);
                linea_wg_load_wg(Ks + s * LINEA_WG_TILE, kb, n0, S, kStride, wtid);
                linea_wg_mbar_arrive_copies(barKf + 8 * s);
                if (c >= 3) linea_wg_mbar_wait(barVe + 8 * s, parity);
                linea_wg_load_wg(Vs + s * LINEA_WG_TILE, vb, n0, S, kStride, wtid);
                linea_wg_mbar_arrive_copies(barVf + 8 * s);
            }
            c0 += tiles;
        }
        linea_wg_wait_all();
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" :: "n"(LINEA_WG_CONSUMER_REGS));

    const unsigned qRows = Qs + wg * 64 * 128;
    int c0 = 0;
    for (int round = 0; SPARSE ? round == 0 : linea_wg_item(round, nT, pairs, G, Hq, T, S, causal, window, m0, h, b, nBegin, tiles); ++round) {
        const int rowA = m0 + 64 * wg + 16 * warp + g;
        const int posA = rowA + shift;
        const int wgPosLo = m0 + 64 * wg + shift, wgPosHi = wgPosLo + 63;
        float oacc[64], sacc[64];
        unsigned pa[32];
#pragma unroll
        for (int i = 0; i < 64; ++i) oacc[i] = 0.f;
#pragma unroll
        for (int i = 0; i < 32; ++i) pa[i] = 0u;
        float mRow[2] = {LINEA_NEG_INF, LINEA_NEG_INF}, lRow[2] = {0.f, 0.f}, alpha[2];
        linea_wg_mbar_wait(barQ, round & 1);
        if (tiles == 0 && lane == 0) linea_wg_mbar_arrive(barQe);  // no S reads this Q
        if (LINEA_WG_PINGPONG && wg == 1) linea_wg_bar_arrive(1);  // warpgroup 0 issues first
        int n0 = SPARSE ? linea_wg_next_tile(linea_wg_bits, -1, sp.bn, cbEnd, nEnd) : nBegin;  // key tile it
        for (int it = 0; it <= tiles; ++it, n0 = SPARSE ? linea_wg_next_tile(linea_wg_bits, n0, sp.bn, cbEnd, nEnd) : n0 + LINEA_WG_BN) {
            const bool fresh = it < tiles;
            const int c = c0 + it;
            const int sK = c % 3, sV = (c + 2) % 3;  // stages of K_it and V_it-1
            if (fresh) linea_wg_mbar_wait(barKf + 8 * sK, (c / 3) & 1);
            if (it > 0) linea_wg_mbar_wait(barVf + 8 * sV, ((c - 1) / 3) & 1);
            linea_wg_fence_proxy();  // the landed cp.async data (generic proxy) before the wgmma reads (async proxy)
            const unsigned Kt = Ks + sK * LINEA_WG_TILE, Vp = Vs + sV * LINEA_WG_TILE;
            auto issueS = [&]() {
#pragma unroll
                for (int ks = 0; ks < 8; ++ks) {
                    const unsigned off = (ks >> 2) * (128 * 128) + (ks & 3) * 32;
                    linea_wg_ss<F16>(sacc, linea_wg_desc(qRows + off, 16, 1024), linea_wg_desc(Kt + off, 16, 1024), ks > 0);
                }
                linea_wg_commit_group();
            };
            auto issuePV = [&]() {
#pragma unroll
                for (int kk = 0; kk < 8; ++kk)
                    linea_wg_rs<F16, 1>(oacc, pa + 4 * kk, linea_wg_desc(Vp + kk * 2048, 128 * 128, 1024), 1);
                linea_wg_commit_group();
            };
            if (LINEA_WG_PINGPONG) linea_wg_bar_sync(1 + wg);
            if (fresh) {
                linea_wg_fence();
                issueS();
                if (it > 0) issuePV();
                // The other warpgroup may issue once S has completed (a named-barrier arrive between these GEMMs'
                // issue and their wait makes ptxas serialize them, C7514); its GEMMs then queue behind this P V.
                if (it > 0) linea_wg_wait<1>(); else linea_wg_wait<0>();
                if (LINEA_WG_PINGPONG) linea_wg_bar_arrive(2 - wg);
#pragma unroll
                for (int i = 0; i < 64; ++i) linea_wg_touch(sacc[i]);
                const bool needMask = (n0 + LINEA_WG_BN > S) || (causal && n0 + LINEA_WG_BN - 1 > wgPosLo) ||
                                      (window > 0 && n0 <= wgPosHi - window);
                linea_wg_softmax(sacc, mRow, lRow, alpha, needMask, n0, posA, tq, S, causal, window, scale_log2);
                linea_wg_wait<0>();
#pragma unroll
                for (int i = 0; i < 64; ++i) linea_wg_touch(oacc[i]);
                linea_wg_rescale_pack<F16>(oacc, sacc, pa, alpha);
            } else {
                if (it > 0) {
                    linea_wg_fence();
                    issuePV();
                }
                if (LINEA_WG_PINGPONG && wg == 0) linea_wg_bar_arrive(2);
                linea_wg_wait<0>();
#pragma unroll
                for (int i = 0; i < 64; ++i) linea_wg_touch(oacc[i]);
            }
            // Every GEMM of this step has completed: release K_it and V_it-1, and Q after the last S (one arrival
            // per warp), so the producer can bring the next item's Q while this one drains and stores.
            if (lane == 0) {
                if (fresh) linea_wg_mbar_arrive(barKe + 8 * sK);
                if (it > 0) linea_wg_mbar_arrive(barVe + 8 * sV);
                if (it == tiles - 1) linea_wg_mbar_arrive(barQe);
            }
        }
        linea_wg_store(oacc, mRow, lRow, o, lse, rowA, tq, b, h, T, Hq, out_mode);
        c0 += tiles;
    }
}

extern "C" __global__ void __launch_bounds__(384, 1) linea_attn_wgmma_ws_bf16_d128(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_mode, int B, int G, int kvRows) {
    linea_attn_wgmma_ws<false, false>(q, k, v, o, lse, T, S, Hq, Hkv, scale_log2, causal, window, out_mode, B, G, kvRows);
}

extern "C" __global__ void __launch_bounds__(384, 1) linea_attn_wgmma_ws_f16_d128(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_mode, int B, int G, int kvRows) {
    linea_attn_wgmma_ws<true, false>(q, k, v, o, lse, T, S, Hq, Hkv, scale_log2, causal, window, out_mode, B, G, kvRows);
}

// Block-sparse attention (as attention_block_sparse_mma.cu's mask convention: query i sees key j when
// mask[i / bm][j / bn] != 0 and, causal, j <= i + S - T) on the warp-specialized kernel; bm, bn multiples of 128,
// at most 8192 key blocks, one block per (query tile, head, batch) item (grid nT B Hq, G as the dense launch).
#define LINEA_WG_BSPARSE_PARAMS const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse, \
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int out_mode, int B, int G, const unsigned char* mask, \
    int bm, int bn, int maskB, int maskH, int KB
extern "C" __global__ void __launch_bounds__(384, 1) linea_attn_wgmma_bsparse_bf16_d128(LINEA_WG_BSPARSE_PARAMS) {
    linea_attn_wgmma_ws<false, true>(q, k, v, o, lse, T, S, Hq, Hkv, scale_log2, causal, 0, out_mode, B, G, S,
                                     LineaWgSparse{mask, bm, bn, maskB, maskH, KB});
}

extern "C" __global__ void __launch_bounds__(384, 1) linea_attn_wgmma_bsparse_f16_d128(LINEA_WG_BSPARSE_PARAMS) {
    linea_attn_wgmma_ws<true, true>(q, k, v, o, lse, T, S, Hq, Hkv, scale_log2, causal, 0, out_mode, B, G, S,
                                    LineaWgSparse{mask, bm, bn, maskB, maskH, KB});
}

extern "C" __global__ void __launch_bounds__(256, 1) linea_attn_wgmma_bf16_d128(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_wgmma<false>(q, k, v, o, lse, T, S, Hq, Hkv, scale_log2, causal, window, out_mode, kvRows);
}

extern "C" __global__ void __launch_bounds__(256, 1) linea_attn_wgmma_f16_d128(
    const unsigned short* q, const unsigned short* k, const unsigned short* v, void* o, float* lse,
    int T, int S, int Hq, int Hkv, float scale_log2, int causal, int window, int out_mode, int kvRows) {
    linea_attn_wgmma<true>(q, k, v, o, lse, T, S, Hq, Hkv, scale_log2, causal, window, out_mode, kvRows);
}
