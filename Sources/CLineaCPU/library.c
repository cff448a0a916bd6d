#define _GNU_SOURCE
#include <dlfcn.h>
#include "linea_cpu.h"

const char *linea_library_path(const void *symbol) {
    Dl_info info;
    return dladdr(symbol, &info) != 0 ? info.dli_fname : 0;
}
