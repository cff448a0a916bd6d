// Lab kernel, not part of the library: a split chunked forward of the scalar-decay recurrences, tried in session 5
// against the library's fused walk (Sources/LineaCUDA/Kernels/cu/chunked_fwd.cu). lab/chunked_lab.py --split
// compiles it after the chunked_common.cuh helpers and launches it; lab/chunked_cuda_notes.md has what it measured.
// Linea: split chunked forward of S_t = a_t S_{t-1} + k_t v_t^T, o_t = scale q_t^T S_t (a_t = e^{g_t}: a scalar log
// gate per (b, t, h), a fixed one per head, or none), chunks of C = 64 tokens.
// q, k [B,T,H,K], v [B,T,H,V] bf16; g [B,T,H] fp32 (gate_mode 2) or per-head log decay [H] (gate_mode 1) or none (0);
// state h0/ht [B,H,K,V] fp32 (either may be null); o [B,T,H,V] bf16 or fp32.
//
// linea_split_state_*: one block of 4 warps per (V block of BV columns, head, batch) walks the chunks with its K x BV
// slice of the state in fp32 registers. Before chunk c it stores that slice as f16, times 2^s with s chosen per chunk
// and slice so that the largest entry lies in [2^14, 2^15) (hq [B,NC,H,K,V]), and 2^-s (hs [B,NC,H,V/BV]); then
// S <- e^{G_last} S + sum_j k_j (e^{G_last-G_j} v_j)^T, the decayed v split into bf16 hi + lo (two MMAs). The walk
// has no outputs, so it is short; every output then runs in parallel.
// linea_split_out_*: one block of 4 warps per (64 columns of V, chunk, head and batch); warp w computes rows 16 w ..:
//   o_i = scale e^{G_i} q_i S_c + sum_{j<=i} scale e^{G_i-G_j} (q_i.k_j) v_j,
// the decayed scores split into bf16 hi + lo, and q_i S_c as one f16 MMA with q_i times a power of two per row (bf16
// values are exact in f16 once scaled into its range) against the stored f16 state. The f16 state carries 11
// significant bits (relative error below 2^-11), against 8 for bf16.
__device__ __forceinline__ void ls_mma_f16(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// f16x2 of (lo, hi), round to nearest even; lo in the low half.
__device__ __forceinline__ unsigned ls_pack_f16(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
// The power-of-two exponent that brings a positive maximum m into [2^(top-1), 2^top), clamped so that both 2^s and
// 2^-s are normal floats (m = 0 gives the clamp).
__device__ __forceinline__ int ls_scale_exp(float m, int top) {
    const int above = ((__float_as_int(m) >> 23) & 0xff) - 126;  // m < 2^above
    return max(-110, min(110, top - above));
}
__device__ __forceinline__ float ls_pow2(int e) { return __int_as_float((e + 127) << 23); }
__device__ __forceinline__ float ls_absmax2(unsigned bf2) {  // max |x| of a bf16 pair
    return fmaxf(fabsf(__uint_as_float(bf2 << 16)), fabsf(__uint_as_float(bf2 & 0xffff0000u)));
}
// A bf16 pair times 2^s as an f16 pair (exact while the scaled values stay normal in f16).
__device__ __forceinline__ unsigned ls_bf16_to_f16(unsigned bf2, float up) {
    return ls_pack_f16(__uint_as_float(bf2 << 16) * up, __uint_as_float(bf2 & 0xffff0000u) * up);
}
template <int K, int BV>
__device__ __forceinline__ void ls_state(
    const lc_bf16* __restrict__ k, const lc_bf16* __restrict__ v, const float* __restrict__ g, int gate_mode,
    const float* __restrict__ h0, float* __restrict__ ht, unsigned short* __restrict__ hq, float* __restrict__ hs,
    int T, int H, int V, int seg_chunks, int end_only, float* __restrict__ seg_state, float* __restrict__ seg_gate)
{
    // Warp w owns the state's m-tiles w*MW .. (16 key rows each) and all NS n-tiles of this block's BV columns.
    constexpr int NW = 4, C = 64, LK = K + 8, LV = BV + 8, MW = K / 16 / NW, NS = BV / 8;
    static_assert(MW >= 1 && NS % 2 == 0, "tile split");
    extern __shared__ uint4 lc_smem4[];
    lc_bf16* Ks = (lc_bf16*)lc_smem4;       // [2][C][LK]
    lc_bf16* Vs = Ks + 2 * C * LK;          // [2][C][LV]
    lc_bf16* Vdh = Vs + 2 * C * LV;         // [C][LV] e^{G_last-G_j} v_j, hi
    lc_bf16* Vdl = Vdh + C * LV;            // [C][LV] ... lo
    unsigned short* Hst = Vdl + C * LV;     // [K][LV] the scaled f16 state before the chunk, for the stores
    float* Gall = (float*)(Hst + K * LV);   // [NW][C] cumulative gates, one copy per warp
    float* red = Gall + NW * C;             // [NW] per-warp max |S|
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const int mat = lane >> 3, r8 = lane & 7;
    // Segments of seg_chunks chunks (blockIdx.z = b * P + p). With end_only, segment p < P - 1 runs from a zero state
    // and stores only its end state and total log2 gate (seg_state [B*P,H,K,V], seg_gate [B*P,H]), which
    // linea_chunk_seg_scan (the `chunked` source) turns into start states; otherwise segment p starts from h0 (p = 0)
    // or from seg_state[p - 1] and stores the state before each of its chunks (and ht, if last).
    const int NC = (T + C - 1) / C, P = (NC + seg_chunks - 1) / seg_chunks;
    const int v0 = blockIdx.x * BV, h = blockIdx.y, b = blockIdx.z / P, p = blockIdx.z - b * P;
    const int cBegin = p * seg_chunks, cEnd = min(NC, cBegin + seg_chunks);
    if (end_only && p == P - 1) return;
    const long kStride = (long)H * K, vStride = (long)H * V;
    const lc_bf16* kb = k + (long)b * T * kStride + (long)h * K;
    const lc_bf16* vb = v + (long)b * T * vStride + (long)h * V + v0;
    float* G = Gall + warp * C;
    const unsigned sK = lc_smem_addr(Ks), sV = lc_smem_addr(Vs), sVdh = lc_smem_addr(Vdh), sVdl = lc_smem_addr(Vdl),
                   sHst = lc_smem_addr(Hst);
    const unsigned bOff = lc_b_off(LV, lane);
    const unsigned ktOff = (((mat >> 1) * 8 + r8) * LK + warp * MW * 16 + (mat & 1) * 8) * 2;  // A = K^T, rows w*MW*16..

    float S[MW][NS][4];
    const long sBase = ((long)b * H + h) * K * V + v0;
    const float* start = end_only ? 0 : p > 0 ? seg_state + ((long)(b * P + p - 1) * H + h) * K * V + v0 : h0;
    const long startOff = p > 0 ? 0 : sBase;
#pragma unroll
    for (int mt = 0; mt < MW; ++mt)
#pragma unroll
        for (int nt = 0; nt < NS; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = (warp * MW + mt) * 16 + gq + 8 * (e >> 1), col = nt * 8 + 2 * tq + (e & 1);
                S[mt][nt][e] = start ? start[startOff + (long)row * V + col] : 0.f;
            }
    auto load = [&](int c, int buf) {
        lc_load_tile<K, lc_bf16, 128>(Ks + buf * C * LK, kb, c * C, T, kStride);
        lc_load_tile<BV, lc_bf16, 128>(Vs + buf * C * LV, vb, c * C, T, vStride);
        lc_cp_commit();
    };
    load(cBegin, 0);
    float gn0 = lc_gate(g, gate_mode, b, h, cBegin * C + 2 * lane, T, H);
    float gn1 = lc_gate(g, gate_mode, b, h, cBegin * C + 2 * lane + 1, T, H);
    float gsum = 0.f;  // total log2 gate of the segment
    for (int c = cBegin; c < cEnd; ++c) {
        const int buf = (c - cBegin) & 1;
        const float g0 = gn0, g1 = gn1;
        if (c + 1 < cEnd) {
            load(c + 1, buf ^ 1);
            gn0 = lc_gate(g, gate_mode, b, h, (c + 1) * C + 2 * lane, T, H);
            gn1 = lc_gate(g, gate_mode, b, h, (c + 1) * C + 2 * lane + 1, T, H);
            lc_cp_wait<1>();
        } else {
            lc_cp_wait<0>();
        }
        lc_cumsum(g0 * 1.4426950408889634f, g1 * 1.4426950408889634f, G, lane);  // log2 units
        const long cBase = ((long)b * NC + c) * H + h;
        if (!end_only) {
            float mx[NS];  // max |S| as a tree (a serial fmax chain is 64 dependent steps)
#pragma unroll
            for (int nt = 0; nt < NS; ++nt) {
                mx[nt] = 0.f;
#pragma unroll
                for (int mt = 0; mt < MW; ++mt)
                    mx[nt] = fmaxf(mx[nt], fmaxf(fmaxf(fabsf(S[mt][nt][0]), fabsf(S[mt][nt][1])),
                                                 fmaxf(fabsf(S[mt][nt][2]), fabsf(S[mt][nt][3]))));
            }
#pragma unroll
            for (int w = NS / 2; w >= 1; w >>= 1)
#pragma unroll
                for (int nt = 0; nt < w; ++nt) mx[nt] = fmaxf(mx[nt], mx[nt + w]);
            float m = mx[0];
#pragma unroll
            for (int o = 16; o; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
            if (lane == 0) red[warp] = m;
        }
        __syncthreads();  // tiles of chunk c; the warps' maxima
        if (!end_only) {
            const float m = fmaxf(fmaxf(red[0], red[1]), fmaxf(red[2], red[3]));
            const int s = ls_scale_exp(m, 15);
            const float up = ls_pow2(s);
            // The scaled f16 state goes through shared memory (Hst) so that its global stores are whole 16-byte runs.
#pragma unroll
            for (int mt = 0; mt < MW; ++mt)
#pragma unroll
                for (int nt = 0; nt < NS; ++nt)
#pragma unroll
                    for (int r = 0; r < 2; ++r) {
                        const int row = (warp * MW + mt) * 16 + gq + 8 * r, col = nt * 8 + 2 * tq;
                        lc_sts(sHst + (row * LV + col) * 2, ls_pack_f16(S[mt][nt][2 * r] * up, S[mt][nt][2 * r + 1] * up));
                    }
            if (tid == 0) hs[cBase * (V / BV) + blockIdx.x] = ls_pow2(-s);
        }
        const float Glast = G[C - 1];
        gsum += Glast;
        const unsigned sVt = sV + buf * C * LV * 2, sKt = sK + buf * C * LK * 2;
        if (gate_mode != 0) {
            // e^{G_last-G_j} v_j, split into bf16 hi + lo.
#pragma unroll
            for (int x = tid; x < C * BV / 2; x += NW * 32) {
                const int i = x / (BV / 2), col = 2 * (x - i * (BV / 2));
                const unsigned at = (i * LV + col) * 2;
                unsigned v2;
                asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v2) : "r"(sVt + at));
                const float d = lc_ex2(Glast - G[i]);
                unsigned hi, lo;
                lc_split(__uint_as_float(v2 << 16) * d, __uint_as_float(v2 & 0xffff0000u) * d, hi, lo);
                lc_sts(sVdh + at, hi);
                lc_sts(sVdl + at, lo);
            }
            __syncthreads();  // Vdh / Vdl and Hst complete
            const float d = lc_ex2(Glast);
#pragma unroll
            for (int mt = 0; mt < MW; ++mt)
#pragma unroll
                for (int nt = 0; nt < NS; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) S[mt][nt][e] *= d;
        }
        if (gate_mode == 0 && !end_only) __syncthreads();  // Hst complete
#ifndef LS_NO_HQ  // (lab only: time the walk without its stores)
        if (!end_only) {
            unsigned short* hqc = hq + cBase * K * V + v0;
#pragma unroll
            for (int x = tid; x < K * BV / 8; x += NW * 32) {
                const int row = x / (BV / 8), col = 8 * (x - row * (BV / 8));
                uint4 w4;
                asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(w4.x), "=r"(w4.y), "=r"(w4.z), "=r"(w4.w)
                             : "r"(sHst + (row * LV + col) * 2));
                *(uint4*)(hqc + (long)row * V + col) = w4;
            }
        }
#endif
        const unsigned sVd = gate_mode != 0 ? sVdh : sVt;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
#pragma unroll
            for (int mt = 0; mt < MW; ++mt) {
                unsigned a[4];  // A = K^T: rows = key dims, columns = tokens
                lc_ldsm_t(a, sKt + ktOff + (mt * 16 + kk * 16 * LK) * 2);
#pragma unroll
                for (int np = 0; np < NS / 2; ++np) {
                    unsigned bv[4];
                    lc_ldsm_b(bv, sVd, LV, kk * 16, np * 16, bOff);
                    lc_mma2(S[mt][2 * np], S[mt][2 * np + 1], a, bv);
                    if (gate_mode != 0) {
                        lc_ldsm_b(bv, sVdl, LV, kk * 16, np * 16, bOff);
                        lc_mma2(S[mt][2 * np], S[mt][2 * np + 1], a, bv);
                    }
                }
            }
        __syncthreads();  // every warp is done with the tiles of chunk c
    }
    float* out = end_only ? seg_state + ((long)(b * P + p) * H + h) * K * V + v0 : (p == P - 1 && ht ? ht + sBase : 0);
    if (out) {
#pragma unroll
        for (int mt = 0; mt < MW; ++mt)
#pragma unroll
            for (int nt = 0; nt < NS; ++nt)
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    const int row = (warp * MW + mt) * 16 + gq + 8 * r, col = nt * 8 + 2 * tq;
                    *(float2*)(out + (long)row * V + col) = make_float2(S[mt][nt][2 * r], S[mt][nt][2 * r + 1]);
                }
    }
    if (end_only && tid == 0 && blockIdx.x == 0) seg_gate[(long)(b * P + p) * H + h] = gsum;
}

template <int K>
__device__ __forceinline__ void ls_out(
    const lc_bf16* __restrict__ q, const lc_bf16* __restrict__ k, const lc_bf16* __restrict__ v,
    const float* __restrict__ g, int gate_mode, const unsigned short* __restrict__ hq, const float* __restrict__ hs,
    int state_block, void* __restrict__ o, int out_bf16, int T, int H, int V, float scale)
{
    constexpr int C = 64, BV = 64, LK = K + 8, LV = BV + 8, KS = K / 16, NH = BV / 8;
    extern __shared__ uint4 lc_smem4[];
    lc_bf16* Qs = (lc_bf16*)lc_smem4;                      // [C][LK]
    lc_bf16* Ks = Qs + C * LK;                             // [C][LK]
    lc_bf16* Vs = Ks + C * LK;                             // [C][LV]
    unsigned short* Hs = Vs + C * LV;                      // [K][LV] f16 state before the chunk, scaled
    float* Gall = (float*)(Hs + K * LV);                   // [NW][C]
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const int mat = lane >> 3, r8 = lane & 7;
    const int NC = (T + C - 1) / C, v0 = blockIdx.x * BV, c = blockIdx.y, b = blockIdx.z / H, h = blockIdx.z - b * H;
    const long kStride = (long)H * K, vStride = (long)H * V, cBase = ((long)b * NC + c) * H + h;
    lc_load_tile<K, lc_bf16, 128>(Qs, q + (long)b * T * kStride + (long)h * K, c * C, T, kStride);
    lc_load_tile<K, lc_bf16, 128>(Ks, k + (long)b * T * kStride + (long)h * K, c * C, T, kStride);
    lc_load_tile<BV, lc_bf16, 128>(Vs, v + (long)b * T * vStride + (long)h * V + v0, c * C, T, vStride);
    const unsigned short* hqc = hq + cBase * K * V + v0;
#pragma unroll
    for (int r = 0; r < K; r += 64) lc_load_tile<BV, lc_bf16, 128>(Hs + r * LV, hqc + (long)r * V, 0, 64, V);
    lc_cp_commit();
    float hsc[BV / 8];  // the state's scale for each n-tile (loaded before the tiles are waited for)
    const float* hsRow = hs + cBase * (V / state_block);
#pragma unroll
    for (int nt = 0; nt < BV / 8; ++nt) hsc[nt] = hsRow[(v0 + nt * 8) / state_block];
    float* G = Gall + warp * C;
    lc_cumsum(lc_gate(g, gate_mode, b, h, c * C + 2 * lane, T, H) * 1.4426950408889634f,
              lc_gate(g, gate_mode, b, h, c * C + 2 * lane + 1, T, H) * 1.4426950408889634f, G, lane);  // log2 units
    const int r0 = 16 * warp;
    const unsigned sQ = lc_smem_addr(Qs), sK = lc_smem_addr(Ks), sV = lc_smem_addr(Vs), sH = lc_smem_addr(Hs);
    const unsigned aOff = ((r0 + (mat & 1) * 8 + r8) * LK + (mat >> 1) * 8) * 2;  // A rows r0.. of a [C][LK] tile
    const unsigned kOff = ((mat >> 1) * 8 * LK + r8 * LK + (mat & 1) * 8) * 2;     // B = K^T from a [C][LK] tile
    const unsigned bOff = lc_b_off(LV, lane);
    lc_cp_wait<0>();
    __syncthreads();

    // Scores of rows r0..r0+15 against keys 0..r0+15 (the causal block; later key tiles are all masked).
    float s[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
        unsigned a[4];
        lc_ldsm(a, sQ + aOff + ks * 32);
#pragma unroll
        for (int nt = 0; nt < 8; nt += 2) {
            if (nt > 2 * warp) break;
            unsigned kf[4];
            lc_ldsm(kf, sK + kOff + (nt * 8 * LK + ks * 16) * 2);
            lc_mma2(s[nt], s[nt + 1], a, kf);
        }
    }
    const float Gi[2] = {G[r0 + gq], G[r0 + gq + 8]};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int i = r0 + gq + 8 * (e >> 1), j = nt * 8 + 2 * tq + (e & 1);
            s[nt][e] = j <= i ? s[nt][e] * scale * lc_ex2(Gi[e >> 1] - G[j]) : 0.f;
        }
    float acc[NH][4];
#pragma unroll
    for (int nt = 0; nt < NH; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
        if (kk > warp) break;
        unsigned ah[4], al[4];
        lc_split_a(s[2 * kk], s[2 * kk + 1], ah, al);
#pragma unroll
        for (int np = 0; np < NH / 2; ++np) {
            unsigned bv[4];
            lc_ldsm_b(bv, sV, LV, kk * 16, np * 16, bOff);
            lc_mma2(acc[2 * np], acc[2 * np + 1], ah, bv);
            lc_mma2(acc[2 * np], acc[2 * np + 1], al, bv);
        }
    }

    // q_i S_c: q rows scaled by 2^sq into [2^13, 2^14) (the largest entry of the row), in f16, against the f16 state.
    float m0 = 0.f, m1 = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
        unsigned a[4];
        lc_ldsm(a, sQ + aOff + ks * 32);
        m0 = fmaxf(m0, fmaxf(ls_absmax2(a[0]), ls_absmax2(a[2])));
        m1 = fmaxf(m1, fmaxf(ls_absmax2(a[1]), ls_absmax2(a[3])));
    }
#pragma unroll
    for (int o = 1; o < 4; o <<= 1) {
        m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, o));
        m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, o));
    }
    const int sq0 = ls_scale_exp(m0, 14), sq1 = ls_scale_exp(m1, 14);
    const float up0 = ls_pow2(sq0), up1 = ls_pow2(sq1);
    float qs[NH][4];
#pragma unroll
    for (int nt = 0; nt < NH; ++nt) qs[nt][0] = qs[nt][1] = qs[nt][2] = qs[nt][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
        unsigned a[4];
        lc_ldsm(a, sQ + aOff + ks * 32);
        a[0] = ls_bf16_to_f16(a[0], up0);
        a[1] = ls_bf16_to_f16(a[1], up1);
        a[2] = ls_bf16_to_f16(a[2], up0);
        a[3] = ls_bf16_to_f16(a[3], up1);
#pragma unroll
        for (int np = 0; np < NH / 2; ++np) {
            unsigned hb[4];
            lc_ldsm_b(hb, sH, LV, ks * 16, np * 16, bOff);
            ls_mma_f16(qs[2 * np], a, hb[0], hb[1]);
            ls_mma_f16(qs[2 * np + 1], a, hb[2], hb[3]);
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = r0 + gq + 8 * r, t = c * C + i;
        if (t >= T) continue;
        const float f = scale * lc_ex2(Gi[r]) * ls_pow2(r ? -sq1 : -sq0);
        const long base = ((long)b * T + t) * vStride + (long)h * V + v0;
#pragma unroll
        for (int nt = 0; nt < NH; ++nt) {
            const int col = nt * 8 + 2 * tq;
            const float fs = f * hsc[nt];
            const float x0 = acc[nt][2 * r] + fs * qs[nt][2 * r], x1 = acc[nt][2 * r + 1] + fs * qs[nt][2 * r + 1];
            if (out_bf16) *(unsigned*)((lc_bf16*)o + base + col) = lc_pack(x0, x1);
            else *(float2*)((float*)o + base + col) = make_float2(x0, x1);
        }
    }
}

extern "C" __global__ void __launch_bounds__(128) linea_split_state_k64_v32(
    const lc_bf16* k, const lc_bf16* v, const float* g, int gate_mode, const float* h0, float* ht,
    unsigned short* hq, float* hs, int T, int H, int V, int seg_chunks, int end_only, float* seg_state,
    float* seg_gate) {
    ls_state<64, 32>(k, v, g, gate_mode, h0, ht, hq, hs, T, H, V, seg_chunks, end_only, seg_state, seg_gate);
}
extern "C" __global__ void __launch_bounds__(128) linea_split_state_k64_v64(
    const lc_bf16* k, const lc_bf16* v, const float* g, int gate_mode, const float* h0, float* ht,
    unsigned short* hq, float* hs, int T, int H, int V, int seg_chunks, int end_only, float* seg_state,
    float* seg_gate) {
    ls_state<64, 64>(k, v, g, gate_mode, h0, ht, hq, hs, T, H, V, seg_chunks, end_only, seg_state, seg_gate);
}
extern "C" __global__ void __launch_bounds__(128) linea_split_state_k128_v32(
    const lc_bf16* k, const lc_bf16* v, const float* g, int gate_mode, const float* h0, float* ht,
    unsigned short* hq, float* hs, int T, int H, int V, int seg_chunks, int end_only, float* seg_state,
    float* seg_gate) {
    ls_state<128, 32>(k, v, g, gate_mode, h0, ht, hq, hs, T, H, V, seg_chunks, end_only, seg_state, seg_gate);
}
extern "C" __global__ void __launch_bounds__(128) linea_split_state_k128_v64(
    const lc_bf16* k, const lc_bf16* v, const float* g, int gate_mode, const float* h0, float* ht,
    unsigned short* hq, float* hs, int T, int H, int V, int seg_chunks, int end_only, float* seg_state,
    float* seg_gate) {
    ls_state<128, 64>(k, v, g, gate_mode, h0, ht, hq, hs, T, H, V, seg_chunks, end_only, seg_state, seg_gate);
}
extern "C" __global__ void __launch_bounds__(128) linea_split_out_k64(
    const lc_bf16* q, const lc_bf16* k, const lc_bf16* v, const float* g, int gate_mode, const unsigned short* hq,
    const float* hs, int state_block, void* o, int out_bf16, int T, int H, int V, float scale) {
    ls_out<64>(q, k, v, g, gate_mode, hq, hs, state_block, o, out_bf16, T, H, V, scale);
}
extern "C" __global__ void __launch_bounds__(128) linea_split_out_k128(
    const lc_bf16* q, const lc_bf16* k, const lc_bf16* v, const float* g, int gate_mode, const unsigned short* hq,
    const float* hs, int state_block, void* o, int out_bf16, int T, int H, int V, float scale) {
    ls_out<128>(q, k, v, g, gate_mode, hq, hs, state_block, o, out_bf16, T, H, V, scale);
}
