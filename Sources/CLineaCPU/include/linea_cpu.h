#ifndef LINEA_CPU_H
#define LINEA_CPU_H
// x86-64 feature flags read from cpuid and checked against the registers the OS saves (xgetbv), so a flag is set
// only where the instructions both exist and may be used. Zero on other architectures.

/// One bit per feature in the value `linea_cpu_features` returns.
enum {
    LINEA_CPU_AVX2 = 1u << 0,
    LINEA_CPU_FMA = 1u << 1,
    LINEA_CPU_F16C = 1u << 2,
    LINEA_CPU_AVX512F = 1u << 3,
    LINEA_CPU_AVX512DQ = 1u << 4,
    LINEA_CPU_AVX512BW = 1u << 5,
    LINEA_CPU_AVX512VL = 1u << 6,
    LINEA_CPU_AVX512BF16 = 1u << 7,
    LINEA_CPU_AMX_TILE = 1u << 8,
    LINEA_CPU_AMX_BF16 = 1u << 9,
};

/// The features of the running CPU (LINEA_CPU_* bits). O(1): a handful of cpuid instructions.
unsigned linea_cpu_features(void);

/// Writes the 12-character cpuid vendor string ("GenuineIntel", "AuthenticAMD") and a NUL into `out[13]`;
/// an empty string off x86-64.
void linea_cpu_vendor(char out[13]);



// Atomics on plain `long`s shared between threads, for Parallel's spinning pool (Swift's `Atomic` needs macOS 15).
// Sequentially consistent: the pool's park / wake handshake relies on a store then a load not being reordered.

/// Loads `*p`.
static inline long linea_atomic_load(const long *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
/// Stores `v` into `*p`.
static inline void linea_atomic_store(long *p, long v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
/// Adds `v` to `*p`; returns the new value.
static inline long linea_atomic_add(long *p, long v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
/// Replaces `*p` by `desired` if it holds `expected`; returns whether it did.
static inline int linea_atomic_cas(long *p, long expected, long desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
/// Asks for the `bytes` bytes at `p` in the caches ahead of their use (a read; every 64-byte line).
static inline void linea_prefetch(const void *p, long bytes) {
    for (long i = 0; i < bytes; i += 64) __builtin_prefetch((const char *)p + i, 0, 3);
}
/// Tells the core this thread is spinning (x86 `pause`: frees the pipeline for the other hyperthread, saves power).
static inline void linea_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/// The path of the shared library that holds `symbol` (dladdr), or NULL. Swift's Glibc module lacks dladdr.
const char *linea_library_path(const void *symbol);
#endif
