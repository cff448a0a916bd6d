// Linea: the scalar decays' full walk (chunked_scalar.cuh has the method).
// linea-nvrtc-variant: gva -DLINEA_GVA=1  (grouped value heads, HV > H: chunked_common.cuh)
#include "chunked_scalar.cuh"

LC_CHUNK_ENTRY(linea_chunk_fwd_k64_v32_plain, 64, 32, false, false)
LC_CHUNK_ENTRY(linea_chunk_fwd_k64_v32_gated, 64, 32, false, true)
LC_CHUNK_ENTRY(linea_chunk_fwd_k64_v64_plain, 64, 64, false, false)
LC_CHUNK_ENTRY(linea_chunk_fwd_k64_v64_gated, 64, 64, false, true)
LC_CHUNK_ENTRY(linea_chunk_fwd_k64_v128_plain, 64, 128, false, false)
LC_CHUNK_ENTRY(linea_chunk_fwd_k64_v128_gated, 64, 128, false, true)
LC_CHUNK_ENTRY(linea_chunk_fwd_k128_v32_plain, 128, 32, false, false)
LC_CHUNK_ENTRY(linea_chunk_fwd_k128_v32_gated, 128, 32, false, true)
LC_CHUNK_ENTRY(linea_chunk_fwd_k128_v64_plain, 128, 64, false, false)
LC_CHUNK_ENTRY(linea_chunk_fwd_k128_v64_gated, 128, 64, false, true)
LC_CHUNK_ENTRY(linea_chunk_fwd_k128_v128_plain, 128, 128, false, false)
LC_CHUNK_ENTRY(linea_chunk_fwd_k128_v128_gated, 128, 128, false, true)
