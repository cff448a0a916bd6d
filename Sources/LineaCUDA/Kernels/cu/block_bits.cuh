// Linea: the block-sparse kernels' walk over a shared bitmask of kept key blocks (one bit per key block).
#pragma once

// The first set bit at or after c and below cbEnd, or -1 (whole zero words are skipped).
__device__ __forceinline__ int linea_next_set_bit(const unsigned* bits, int c, int cbEnd) {
    while (c < cbEnd) {
        const unsigned w = bits[c >> 5] >> (c & 31);
        if (w != 0u) {
            c += __ffs(w) - 1;
            return c < cbEnd ? c : -1;
        }
        c = (c | 31) + 1;
    }
    return -1;
}
