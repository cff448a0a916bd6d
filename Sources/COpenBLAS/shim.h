// OpenBLAS's CBLAS interface (Debian: libopenblas-dev installs it under the multiarch include dir).
#include <cblas.h>
// Thread-count control of the OpenBLAS runtime.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
