// Linea: Mamba-1's selective scan (mamba_ssm's selective_scan_fn semantics; SelectiveScan.reference), fp32 state.
// Per batch b and channel d, state h [N]: dt = softplus?(delta + bias[d]), h_t = e^(dt A[d]) h_{t-1} + dt B_t u_t,
// y_t = C_t . h_t + D[d] u_t, then y_t silu(z_t).
// Entries linea_sscan_{f32,bf16,f16}_s{16,32}_p{1,2}: u, delta, z, B, C in the suffix's type; A [D, N], D [D], bias [D]
// f32 (D, bias, z may be null); state [B, D, N] f32 (initial on entry, final on return); out [B, D, L] f32.
// B, C are [B, G, N, L]. Lane group of S lanes per channel, P states per lane (N <= S P); a block holds `cb` channels
// of one batch and one group (the launcher picks cb <= 16 dividing D / G), blockDim cb S rounded up to whole warps,
// grid (D / cb, B).
// The scan walks L in chunks of LINEA_SCAN_CHUNK steps: the block stages dt (bias and softplus applied once), u and
// the group's B and C columns in shared memory with coalesced loads; each lane then runs its states through the chunk,
// the chain from step to step being one FMA (e^(dt A) and dt B u do not depend on h). The per-step sums over the
// states (C . h, split over the S lanes) are kept in registers for S steps and reduced together by a butterfly
// reduce-scatter (S - 1 shuffles for S sums instead of S log2 S), after which lane j holds step j's sum.
#define LINEA_SCAN_CHUNK 32
#define LINEA_SCAN_MAX_CHANNELS 16
#define LINEA_SCAN_MAX_STATE 64

#include "element_io.cuh"

template <typename T, int S, int P>
__device__ void sscan(const T* u, const T* delta, const float* A, const T* Bm, const T* Cm, const float* Dv, const T* z,
                      const float* bias, float* state, float* out, int channels, int length, int nstate, int bcGroups,
                      int softplus, int cb) {
    __shared__ float sB[LINEA_SCAN_MAX_STATE][LINEA_SCAN_CHUNK + 1], sC[LINEA_SCAN_MAX_STATE][LINEA_SCAN_CHUNK + 1];
    __shared__ float sDt[LINEA_SCAN_MAX_CHANNELS][LINEA_SCAN_CHUNK + 1], sX[LINEA_SCAN_MAX_CHANNELS][LINEA_SCAN_CHUNK + 1];
    __shared__ float sY[LINEA_SCAN_MAX_CHANNELS][LINEA_SCAN_CHUNK + 1];
    const int b = blockIdx.y, c0 = blockIdx.x * cb, tid = threadIdx.x, threads = blockDim.x;
    const int local = tid / S, lane = tid % S, d = c0 + local;
    const bool active = local < cb && d < channels;
    const int g = c0 / (channels / bcGroups);
    const long rowBase = ((long)b * channels + c0) * length;           // u, delta, z, out row of channel c0
    const long bcBase = ((long)b * bcGroups + g) * nstate * (long)length;  // B, C of the block's group
    const float log2e = 1.4426950408889634f;
    float a2[P], h[P];
#pragma unroll
    for (int k = 0; k < P; ++k) {
        const int n = lane + k * S;
        const bool on = active && n < nstate;
        a2[k] = on ? A[(long)d * nstate + n] * log2e : 0.f;  // e^(dt A) = 2^(dt A log2 e)
        h[k] = on ? state[((long)b * channels + d) * nstate + n] : 0.f;
    }
    for (int l0 = 0; l0 < length; l0 += LINEA_SCAN_CHUNK) {
        const int steps = min(LINEA_SCAN_CHUNK, length - l0);
        __syncthreads();  // the previous chunk's shared values are read
        for (int i = tid; i < cb * LINEA_SCAN_CHUNK; i += threads) {
            const int c = i / LINEA_SCAN_CHUNK, t = i % LINEA_SCAN_CHUNK;
            float dt = 0.f, x = 0.f;  // past the end: dt = 0 leaves h as it is and adds nothing
            if (t < steps && c0 + c < channels) {
                const long at = rowBase + (long)c * length + l0 + t;
                dt = ld(delta, at) + (bias ? bias[c0 + c] : 0.f);
                if (softplus) dt = dt > 20.f ? dt : log1pf(expf(dt));
                x = ld(u, at);
            }
            sDt[c][t] = dt;
            sX[c][t] = x;
        }
        for (int i = tid; i < S * P * LINEA_SCAN_CHUNK; i += threads) {  // rows past N are zeros: their h stays 0
            const int n = i / LINEA_SCAN_CHUNK, t = i % LINEA_SCAN_CHUNK;
            const long at = bcBase + (long)n * length + l0 + t;
            const bool in = t < steps && n < nstate;
            sB[n][t] = in ? ld(Bm, at) : 0.f;
            sC[n][t] = in ? ld(Cm, at) : 0.f;
        }
        __syncthreads();
        {  // every lane group of the block, idle ones too (the shuffles name whole warps); only groups < cb store
#pragma unroll
            for (int t0 = 0; t0 < LINEA_SCAN_CHUNK; t0 += S) {
                float p[S];
#pragma unroll
                for (int j = 0; j < S; ++j) {
                    const int t = t0 + j;
                    const float dt = sDt[local][t], dtx = dt * sX[local][t];
                    float acc = 0.f;
#pragma unroll
                    for (int k = 0; k < P; ++k) {
                        const int n = lane + k * S;
                        h[k] = fmaf(exp2f(dt * a2[k]), h[k], dtx * sB[n][t]);
                        acc = fmaf(sC[n][t], h[k], acc);
                    }
                    p[j] = acc;
                }
                // Reduce-scatter over the S lanes: at offset o, keep the half of p selected by this lane's bit o and
                // add the partner's copy of it; in the end p[0] is the sum for step t0 + lane.
#pragma unroll
                for (int o = S / 2; o >= 1; o >>= 1) {
                    const bool upper = (lane & o) != 0;
#pragma unroll
                    for (int i = 0; i < o; ++i) {
                        const float send = upper ? p[i] : p[i + o], keep = upper ? p[i + o] : p[i];
                        p[i] = keep + __shfl_xor_sync(0xffffffffu, send, o, S);
                    }
                }
                if (local < cb) sY[local][t0 + lane] = p[0];
            }
        }
        __syncthreads();
        for (int i = tid; i < cb * LINEA_SCAN_CHUNK; i += threads) {
            const int c = i / LINEA_SCAN_CHUNK, t = i % LINEA_SCAN_CHUNK;
            if (t >= steps || c0 + c >= channels) continue;
            const long at = rowBase + (long)c * length + l0 + t;
            float y = sY[c][t] + (Dv ? Dv[c0 + c] * sX[c][t] : 0.f);
            if (z) {
                const float gate = ld(z, at);
                y *= gate / (1.f + expf(-gate));
            }
            out[at] = y;
        }
    }
#pragma unroll
    for (int k = 0; k < P; ++k) {
        const int n = lane + k * S;
        if (active && n < nstate) state[((long)b * channels + d) * nstate + n] = h[k];
    }
}

#define LINEA_SSCAN(SUF, T, S, P) \
extern "C" __global__ void __launch_bounds__(LINEA_SCAN_MAX_CHANNELS * S) linea_sscan_##SUF##_s##S##_p##P( \
    const T* u, const T* delta, const float* A, const T* Bm, const T* Cm, const float* Dv, const T* z, const float* bias, \
    float* state, float* out, int channels, int length, int nstate, int bcGroups, int softplus, int cb) { \
    sscan<T, S, P>(u, delta, A, Bm, Cm, Dv, z, bias, state, out, channels, length, nstate, bcGroups, softplus, cb); }
#define LINEA_SSCAN_TYPE(SUF, T) LINEA_SSCAN(SUF, T, 16, 1) LINEA_SSCAN(SUF, T, 32, 1) LINEA_SSCAN(SUF, T, 32, 2)
LINEA_SSCAN_TYPE(f32, float)
LINEA_SSCAN_TYPE(bf16, linea_bf16)
LINEA_SSCAN_TYPE(f16, linea_f16)
