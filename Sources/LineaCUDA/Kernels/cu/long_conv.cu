// Linea: the steps of the causal long convolution's fft form (LongConv.fft) around cuFFT's transforms, fp32 compute.
// A row (one channel of one sequence, or one filter) is n reals padded to pitch = 2 (n/2 + 1) floats: cuFFT's in-place
// real-to-complex layout, so one buffer holds the padded input, then its n/2 + 1 complex bins, then the inverse.
// Entries (SUF = f32 | bf16 | f16, the type of u, k and D):
//   linea_lconv_pad_SUF   out [rows, pitch] f32 = the first `keep` columns of x [rows, cols], zeros after
//   linea_lconv_mul       z [rows, bins] complex *= f [channels, bins] complex of channel row % channels, times scale
//                         (1/n: cuFFT's inverse is unnormalized)
//   linea_lconv_out_SUF   o [rows, length] f32 = y [rows, pitch]'s first `length` values + D[row % channels] u (D may
//                         be null)
// Grid-stride loops over the elements (64-bit indices); any grid and block size.
// No LINEA_SELECT guards: the module is small, so one compile serves every entry.
#include "element_io.cuh"

template <typename T>
__device__ void lconv_pad(const T* x, float* out, int rows, int cols, int keep, int pitch) {
    const long total = (long)rows * pitch;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
        const long r = i / pitch;
        const int j = (int)(i - r * pitch);
        out[i] = j < keep ? ld(x, r * cols + j) : 0.f;
    }
}

template <typename T>
__device__ void lconv_out(const float* y, const T* u, const T* D, float* o, int rows, int channels, int length, int pitch) {
    const long total = (long)rows * length;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
        const long r = i / length;
        const int t = (int)(i - r * length);
        float v = y[r * pitch + t];
        if (D) v += ld(D, r % channels) * ld(u, i);
        o[i] = v;
    }
}

extern "C" __global__ void linea_lconv_mul(float2* z, const float2* f, int rows, int channels, int bins, float scale) {
    const long total = (long)rows * bins;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
        const long r = i / bins;
        const int j = (int)(i - r * bins);
        const float2 a = z[i], b = f[(r % channels) * bins + j];
        z[i] = make_float2((a.x * b.x - a.y * b.y) * scale, (a.x * b.y + a.y * b.x) * scale);
    }
}

#define LINEA_LCONV(SUF, T) \
extern "C" __global__ void linea_lconv_pad_##SUF(const T* x, float* out, int rows, int cols, int keep, int pitch) { \
    lconv_pad<T>(x, out, rows, cols, keep, pitch); } \
extern "C" __global__ void linea_lconv_out_##SUF(const float* y, const T* u, const T* D, float* o, int rows, int channels, \
                                                  int length, int pitch) { \
    lconv_out<T>(y, u, D, o, rows, channels, length, pitch); }
LINEA_LCONV(f32, float)
LINEA_LCONV(bf16, linea_bf16)
LINEA_LCONV(f16, linea_f16)
