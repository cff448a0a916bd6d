// How fast the AVX2 gemv kernel streams a memory-mapped weight file on 2 threads, against the same bytes copied into
// anonymous memory advised to use huge pages (session 29's decode analysis, lab/results/cpu-session29-*.txt).
// Build and run from the repository root (clang: the kernels use clang's vector builtins):
//   clang -O3 -ISources/CLineaKernels/include -c Sources/CLineaKernels/kernels.c -o /tmp/kernels.o
//   clang -O3 -ISources/CLineaKernels/include lab/gemv_stream.c /tmp/kernels.o -lpthread -o /tmp/gemv_stream
//   /tmp/gemv_stream FILE [K]   (FILE: e.g. a model.safetensors of a few hundred MB; K: the row length, default 896)
// The file is read as one [R, K] f32 matrix (the header bytes included: only the traffic matters); each thread takes
// half of the rows; 10 alternating passes per layout, GB/s of weights read.
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "linea_kernels.h"

extern const linea_kernel_table linea_kernels_avx2;

typedef struct { const float *w, *x; float *out; long lo, hi, k, rows; } part;

static void *run(void *p) {
    part *g = p;
    linea_kernels_avx2.gemv(1, g->lo, g->hi, g->k, g->x, g->w, 0, g->out, g->rows);
    return 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s FILE [K]\n", argv[0]); return 2; }
    long k = argc > 2 ? atol(argv[2]) : 896;
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { perror(argv[1]); return 1; }
    long rows = st.st_size / 4 / k;
    size_t bytes = (size_t)rows * k * 4;
    float *mapped = mmap(0, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    float *anonymous = aligned_alloc(1 << 21, (bytes + (1 << 21) - 1) & ~(size_t)((1 << 21) - 1));
    if (mapped == MAP_FAILED || !anonymous) { perror("mmap / alloc"); return 1; }
    madvise(anonymous, bytes, MADV_HUGEPAGE);
    memcpy(anonymous, mapped, bytes);
    float *x = calloc(k, 4), *out = malloc(rows * 4);
    for (long i = 0; i < k; i++) x[i] = 1;
    double best[2] = {0, 0};
    for (int pass = 0; pass < 20; pass++) {
        int layout = pass & 1;
        part parts[2];
        pthread_t threads[2];
        double t0 = now();
        for (int t = 0; t < 2; t++) {
            parts[t] = (part){layout ? anonymous : mapped, x, out, rows / 2 * t, t ? rows : rows / 2, k, rows};
            pthread_create(&threads[t], 0, run, &parts[t]);
        }
        for (int t = 0; t < 2; t++) pthread_join(threads[t], 0);
        double rate = bytes / (now() - t0) / 1e9;
        if (rate > best[layout]) best[layout] = rate;
        printf("%s %.1f  ", layout ? "huge pages" : "mmap", rate);
    }
    printf("\nbest: mmap %.1f GB/s, anonymous huge pages %.1f GB/s\n", best[0], best[1]);
    return 0;
}
