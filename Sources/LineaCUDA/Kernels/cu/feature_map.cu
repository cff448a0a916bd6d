// Linea: feature-map linear attention's maps and the glue around linear_attn's chunked kernels (FeatureMap.apply
// semantics), f32 in and out. x is [B, T, H, K] as rows r = (b T + t) H + h of K values; phi is [rows, F].
// Entries:
//   linea_fmap_map        phi [rows, F] of x [rows, K], one thread per feature: kind 0 identity, 1 elu + 1, 2 relu,
//                         3 taylor2 [1, x', x'_i x'_j / sqrt 2] with x' = x quarter, 4 cosformer [relu(x) cos θ,
//                         relu(x) sin θ] with θ = π/2 (t + 1) / T
//   linea_fmap_performer  one warp per row: phi_f = exp(p_f - |x quarter|² / 2 - m) / sqrt(F) of p = proj [rows, F]
//                         (x times the projection already scaled by quarter); m = 0 (mode 0), the row's max of p
//                         (mode 1) or seqmax[b H + h] (mode 2)
//   linea_fmap_seqmax     one block per (b, h): out[b H + h] = the max of proj [rows, F] over the T rows of (b, h)
//   linea_fmap_cols       out [rows, width] = columns c0 ... c0 + width - 1 of x [rows, cols]; 1 in column `ones`
//                         (when 0 <= ones, past cols: the normalizer's column of ones), 0 elsewhere past cols
//   linea_fmap_accum      acc [rows, accCols] columns c0 ... c0 + n - 1 += y [rows, width] columns 0 ... n - 1
//   linea_fmap_finish     o [rows, V] = acc [rows, accCols]'s first V columns, divided by acc[r, V] + 1e-10 when
//                         normalize
//   linea_fmap_headproj   p [rows, n] = x [rows, K] w[h] of per-head weights w [H, K, n] (hedgehog, hashing)
//   linea_fmap_twosided   phi [rows, 2n] of p [rows, n], a warp per row: hedgehog's two softmaxes or the hashing's codes
//   linea_fmap_readout    non-causal: acc columns c0 ... += scale phi(q_t) S with S the whole sequence's state
// Grid-stride loops with 64-bit indices except the row kernels (a warp per row; seqmax a block per (b, h)).
// No LINEA_SELECT guards: the module is small, so one compile serves every entry.

#define LINEA_FMAP_STRIDE_LOOP(total) \
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < (total); i += (long)gridDim.x * blockDim.x)

extern "C" __global__ void linea_fmap_map(const float* x, float* phi, int rows, int K, int F, int T, int H, int kind,
                                          float quarter) {
    LINEA_FMAP_STRIDE_LOOP((long)rows * F) {
        const long r = i / F;
        const int f = (int)(i - r * F);
        const float* row = x + r * K;
        float v;
        if (kind == 0) {
            v = row[f];
        } else if (kind == 1) {
            v = row[f] > 0.f ? row[f] + 1.f : expf(row[f]);
        } else if (kind == 2) {
            v = fmaxf(row[f], 0.f);
        } else if (kind == 3) {
            if (f == 0) {
                v = 1.f;
            } else if (f <= K) {
                v = row[f - 1] * quarter;
            } else {
                const int a = (f - 1 - K) / K, b = (f - 1 - K) % K;
                v = (row[b] * quarter) * ((row[a] * quarter) * 0.70710678118654752f);  // FeatureMap.apply's order
            }
        } else {
            const int c = f < K ? f : f - K;
            const int t = (int)((r / H) % T);
            const double theta = 1.5707963267948966 * (double)(t + 1) / (double)T;
            v = fmaxf(row[c], 0.f) * (float)(f < K ? cos(theta) : sin(theta));
        }
        phi[i] = v;
    }
}

extern "C" __global__ void linea_fmap_performer(const float* x, const float* proj, const float* seqmax, float* phi, int rows,
                                                int K, int F, int T, int H, int mode, float quarter) {
    const int lane = threadIdx.x & 31;
    const long r = (blockIdx.x * (long)blockDim.x + threadIdx.x) >> 5;
    if (r >= rows) return;  // whole warps leave together
    const float* row = x + r * K;
    const float* p = proj + r * F;
    float sq = 0.f;
    for (int k = lane; k < K; k += 32) {
        const float v = row[k] * quarter;
        sq += v * v;
    }
    for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
    float m = 0.f;
    if (mode == 1) {
        m = -__int_as_float(0x7f800000);
        for (int f = lane; f < F; f += 32) m = fmaxf(m, p[f]);
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    } else if (mode == 2) {
        const long b = r / ((long)T * H);
        m = seqmax[b * H + r % H];
    }
    const float shift = sq / 2.f + m, norm = 1.f / sqrtf((float)F);
    for (int f = lane; f < F; f += 32) phi[r * F + f] = expf(p[f] - shift) * norm;
}

extern "C" __global__ void linea_fmap_seqmax(const float* proj, float* out, int T, int H, int F) {
    __shared__ float part[32];
    const int b = blockIdx.x / H, h = blockIdx.x % H;
    float m = -__int_as_float(0x7f800000);
    for (long i = threadIdx.x; i < (long)T * F; i += blockDim.x) {
        const long t = i / F;
        m = fmaxf(m, proj[(((long)b * T + t) * H + h) * F + (i - t * F)]);
    }
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); ++w) m = fmaxf(m, part[w]);
        out[blockIdx.x] = m;
    }
}

extern "C" __global__ void linea_fmap_cols(const float* x, float* out, int rows, int cols, int c0, int width, int ones) {
    LINEA_FMAP_STRIDE_LOOP((long)rows * width) {
        const long r = i / width;
        const int c = c0 + (int)(i - r * width);
        out[i] = c < cols ? x[r * cols + c] : (c == ones ? 1.f : 0.f);
    }
}

extern "C" __global__ void linea_fmap_accum(const float* y, float* acc, int rows, int width, int accCols, int c0, int n) {
    LINEA_FMAP_STRIDE_LOOP((long)rows * n) {
        const long r = i / n;
        const int j = (int)(i - r * n);
        acc[r * accCols + c0 + j] += y[r * width + j];
    }
}

extern "C" __global__ void linea_fmap_finish(const float* acc, float* o, int rows, int accCols, int V, int normalize) {
    LINEA_FMAP_STRIDE_LOOP((long)rows * V) {
        const long r = i / V;
        const int j = (int)(i - r * V);
        const float v = acc[r * accCols + j];
        o[i] = normalize ? v / (acc[r * accCols + V] + 1e-10f) : v;
    }
}

// Hedgehog's and the hashing's per-head projection: p [rows, n] = x [rows, K] times w [H, K, n] of head r % H; one
// thread per output (adjacent threads read adjacent columns of w).
extern "C" __global__ void linea_fmap_headproj(const float* x, const float* w, float* p, int rows, int K, int H, int n) {
    LINEA_FMAP_STRIDE_LOOP((long)rows * n) {
        const long r = i / n;
        const int j = (int)(i - r * n);
        const float* row = x + r * K;
        const float* wh = w + (long)(r % H) * K * n + j;
        float sum = 0.f;
        for (int k = 0; k < K; ++k) sum = fmaf(row[k], wh[(long)k * n], sum);
        p[i] = sum;
    }
}

// Two-sided features of p [rows, n] into phi [rows, 2n], one warp per row: mode 0 hedgehog [softmax(p), softmax(-p)]
// (each shifted by its max), mode 1 hashing [p >= 0, p < 0] as 1 / 0.
extern "C" __global__ void linea_fmap_twosided(const float* p, float* phi, int rows, int n, int mode) {
    const int lane = threadIdx.x & 31;
    const long r = (blockIdx.x * (long)blockDim.x + threadIdx.x) >> 5;
    if (r >= rows) return;  // whole warps leave together
    const float* pr = p + r * n;
    float* out = phi + r * 2 * n;
    if (mode == 1) {
        for (int j = lane; j < n; j += 32) {
            const bool up = pr[j] >= 0.f;
            out[j] = up ? 1.f : 0.f;
            out[n + j] = up ? 0.f : 1.f;
        }
        return;
    }
    float top = -__int_as_float(0x7f800000), bottom = __int_as_float(0x7f800000);
    for (int j = lane; j < n; j += 32) {
        top = fmaxf(top, pr[j]);
        bottom = fminf(bottom, pr[j]);
    }
    for (int o = 16; o > 0; o >>= 1) {
        top = fmaxf(top, __shfl_xor_sync(0xffffffffu, top, o));
        bottom = fminf(bottom, __shfl_xor_sync(0xffffffffu, bottom, o));
    }
    float sumUp = 0.f, sumDown = 0.f;
    for (int j = lane; j < n; j += 32) {
        const float a = expf(pr[j] - top), b = expf(bottom - pr[j]);
        out[j] = a;
        out[n + j] = b;
        sumUp += a;
        sumDown += b;
    }
    for (int o = 16; o > 0; o >>= 1) {
        sumUp += __shfl_xor_sync(0xffffffffu, sumUp, o);
        sumDown += __shfl_xor_sync(0xffffffffu, sumDown, o);
    }
    const float iu = 1.f / sumUp, id = 1.f / sumDown;
    for (int j = lane; j < n; j += 32) {  // the lane reads back only what it wrote
        out[j] *= iu;
        out[n + j] *= id;
    }
}

// Non-causal read-out: acc [B T HV, accCols] columns c0 ... c0 + n - 1 += scale phi(q_t) S of the whole sequence's state
// S [B, HV, F, n] (linear_attn's final state over a block of F features and n value columns), q [B, T, H, F]; value
// head hv reads q head hv / (HV / H). One thread per output.
extern "C" __global__ void linea_fmap_readout(const float* q, const float* S, float* acc, int B, int T, int H, int HV, int F, int n,
                                              int accCols, int c0, float scale) {
    LINEA_FMAP_STRIDE_LOOP((long)B * T * HV * n) {
        const long row = i / n;  // (b T + t) HV + hv
        const int j = (int)(i - row * n), hv = (int)(row % HV);
        const long bt = row / HV, b = bt / T;
        const float* qr = q + (bt * H + hv / (HV / H)) * F;
        const float* s = S + (b * HV + hv) * (long)F * n + j;
        float sum = 0.f;
        for (int f = 0; f < F; ++f) sum = fmaf(qr[f], s[(long)f * n], sum);
        acc[row * accCols + c0 + j] += scale * sum;
    }
}
