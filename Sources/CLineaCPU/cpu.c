#include "linea_cpu.h"
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long xgetbv0(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

unsigned linea_cpu_features(void) {
    unsigned int a, b, c, d, max_leaf = __get_cpuid_max(0, 0);
    if (max_leaf < 1 || !__get_cpuid(1, &a, &b, &c, &d)) return 0;
    // Without OSXSAVE the OS saves no vector state beyond SSE: nothing wider may run.
    if (!(c & (1u << 27))) return 0;
    unsigned long long xcr0 = xgetbv0();
    int ymm_ok = (xcr0 & 0x6) == 0x6;           // SSE and AVX state
    int zmm_ok = ymm_ok && (xcr0 & 0xE0) == 0xE0; // opmask, upper ZMM0-15, ZMM16-31
    int amx_ok = (xcr0 & 0x60000) == 0x60000;   // TILECFG, TILEDATA
    unsigned f = 0;
    if (!ymm_ok || !(c & (1u << 28))) return 0; // AVX itself
    if (c & (1u << 12)) f |= LINEA_CPU_FMA;
    if (c & (1u << 29)) f |= LINEA_CPU_F16C;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        unsigned int leaf7_max = a;
        if (b & (1u << 5)) f |= LINEA_CPU_AVX2;
        if (zmm_ok) {
            if (b & (1u << 16)) f |= LINEA_CPU_AVX512F;
            if (b & (1u << 17)) f |= LINEA_CPU_AVX512DQ;
            if (b & (1u << 30)) f |= LINEA_CPU_AVX512BW;
            if (b & (1u << 31)) f |= LINEA_CPU_AVX512VL;
        }
        if (amx_ok) {
            if (d & (1u << 24)) f |= LINEA_CPU_AMX_TILE;
            if (d & (1u << 22)) f |= LINEA_CPU_AMX_BF16;
        }
        if (zmm_ok && leaf7_max >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            if (a & (1u << 5)) f |= LINEA_CPU_AVX512BF16;
        }
    }
    return f;
}

void linea_cpu_vendor(char out[13]) {
    unsigned int a, b, c, d;
    out[0] = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    memcpy(out, &b, 4);
    memcpy(out + 4, &d, 4);
    memcpy(out + 8, &c, 4);
    out[12] = 0;
}
#else
unsigned linea_cpu_features(void) { return 0; }
void linea_cpu_vendor(char out[13]) { out[0] = 0; }
#endif
