// FFTW 3's single-precision API (fftwf_*), from Debian's libfftw3-dev (scripts/setup.sh installs it).
#include <fftw3.h>
