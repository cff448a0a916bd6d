// Linea: element types of the kernels that read and write f32, bf16 or f16 through one template parameter T, and
// their loads and stores as fp32 (bf16 by shifting, f16 through cvt; stores round to nearest even), also with the type
// as a launch argument (kind 0 f32, 1 bf16, 2 f16: ld_kind, st_kind). Included by model_ops.cu, selective_scan.cu,
// recurrent_step.cu, long_conv.cu and attention_neighborhood.cu.
#pragma once
struct linea_bf16 { unsigned short x; };
struct linea_f16 { unsigned short x; };
__device__ __forceinline__ float ld(const float* p, long i) { return p[i]; }
__device__ __forceinline__ float ld(const linea_bf16* p, long i) { return __uint_as_float(((unsigned int)p[i].x) << 16); }
__device__ __forceinline__ float ld(const linea_f16* p, long i) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i].x)); return f;
}
__device__ __forceinline__ void st(float* p, long i, float v) { p[i] = v; }
__device__ __forceinline__ void st(linea_bf16* p, long i, float v) {
    unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v)); p[i].x = h;
}
__device__ __forceinline__ void st(linea_f16* p, long i, float v) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v)); p[i].x = h;
}
// Element i of an array of `kind` (0 f32, 1 bf16, 2 f16: a launch argument, uniform over the grid), as fp32.
__device__ __forceinline__ float ld_kind(const void* p, long i, int kind) {
    if (kind == 0) return ld((const float*)p, i);
    return kind == 1 ? ld((const linea_bf16*)p, i) : ld((const linea_f16*)p, i);
}
// Stores fp32 x as element i of an array of `kind` (0 f32, 1 bf16, 2 f16), rounding to nearest even.
__device__ __forceinline__ void st_kind(void* p, long i, int kind, float x) {
    if (kind == 0) st((float*)p, i, x);
    else if (kind == 1) st((linea_bf16*)p, i, x);
    else st((linea_f16*)p, i, x);
}
