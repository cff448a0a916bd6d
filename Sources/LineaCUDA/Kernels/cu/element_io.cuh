// Linea: element types of the kernels that read and write f32, bf16 or f16 through one template parameter T, and
// their loads and stores as fp32 (bf16 by shifting, f16 through cvt; stores round to nearest even). Included by
// model_ops.cu and selective_scan.cu.
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
