// Linea: the scans that join the segments of long chunked runs (chunked_scalar.cuh's overview).
#include "chunked_common.cuh"

// Segment scan (scalar decays): seg_state [B*P,H,K*V] holds the end state of segments 0..P-2 from a zero state and
// seg_gate [B*P,H] their total log2 gates; replaces seg_state[p] by the state after segment p from h0 (or zero):
// S_{p+1} = 2^{gate_p} S_p + end_p. One thread per (b, h, state element), P - 1 steps.
extern "C" __global__ void __launch_bounds__(256) linea_chunk_seg_scan(
    float* seg_state, const float* seg_gate, const float* h0, int P, int H, int KV) {
    const int e = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y, b = blockIdx.z;
    if (e >= KV) return;
    float S = h0 ? h0[((long)b * H + h) * KV + e] : 0.f;
    for (int p = 0; p + 1 < P; ++p) {
        const long seg = (long)(b * P + p) * H + h;
        S = fmaf(lc_ex2(seg_gate[seg]), S, seg_state[seg * KV + e]);
        seg_state[seg * KV + e] = S;
    }
}

// Segment scan (delta rules): seg_state [B*P,H,K,V] holds E_p, the end state of segments 0..P-2 from a zero state, and
// seg_trans [B*P,H,K,K] their transitions M_p (M_0 only with h0); replaces seg_state[p] by S_{p+1} = M_p S_p + E_p
// (S_0 = h0 or zero), in fp32. One block per (32 columns of V, h, b); M_p goes through shared memory 32 columns at a time. K <= 128.
extern "C" __global__ void __launch_bounds__(256) linea_chunk_seg_scan_delta(
    float* seg_state, const float* seg_trans, const float* h0, int P, int H, int K, int V) {
    __shared__ float Ss[128][33], Ms[128][33];
    const int tid = threadIdx.x, tx = tid & 7, ty = tid >> 3, v0 = blockIdx.x * 32, h = blockIdx.y, b = blockIdx.z;
    const int R = K / 32;  // rows per thread: ty + 32 i
    for (int e = tid; e < K * 32; e += 256) {
        const int r = e >> 5, c = e & 31;
        Ss[r][c] = h0 ? h0[(((long)b * H + h) * K + r) * V + v0 + c] : 0.f;
    }
    for (int p = 0; p + 1 < P; ++p) {
        const long seg = (long)(b * P + p) * H + h;
        float* E = seg_state + seg * K * V + v0;
        const float* M = seg_trans + seg * K * K;
        float acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = i < R ? E[(long)(ty + 32 * i) * V + tx * 4 + j] : 0.f;
        for (int m0 = 0; (p > 0 || h0) && m0 < K; m0 += 32) {  // S_0 = 0 without h0: S_1 = E_0
            __syncthreads();  // Ss complete; the previous Ms tile read
            for (int e = tid; e < K * 32; e += 256) Ms[e >> 5][e & 31] = M[(long)(e >> 5) * K + m0 + (e & 31)];
            __syncthreads();
            for (int mm = 0; mm < 32; ++mm) {
                float s[4];
#pragma unroll
                for (int j = 0; j < 4; ++j) s[j] = Ss[m0 + mm][tx * 4 + j];
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    if (i >= R) break;
                    const float m = Ms[ty + 32 * i][mm];
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(m, s[j], acc[i][j]);
                }
            }
        }
        __syncthreads();  // every thread is done reading Ss
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            if (i >= R) break;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                Ss[ty + 32 * i][tx * 4 + j] = acc[i][j];
                E[(long)(ty + 32 * i) * V + tx * 4 + j] = acc[i][j];
            }
        }
    }
}
