// The AVX-512 popcount block of the XNOR convolution compiled against SIMDe's portable emulation of
// the intrinsics, so the AVX-512 path can be checked on machines without AVX-512
// (tools/avx512_emulation/run_xnor_conv.sh). Test-only; the library uses the real intrinsics.
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <cstdint>
#include <cstring>
typedef simde__mmask8 __mmask8;
// shims for intrinsics simde 0.7.4 lacks
static inline simde__m512i _mm512_maskz_loadu_epi64(__mmask8 k, const void* p) {
  int64_t v[8];
  for (int i = 0; i < 8; ++i) v[i] = (k >> i & 1) ? static_cast<const int64_t*>(p)[i] : 0;  // masked lanes never read
  simde__m512i r; std::memcpy(&r, v, 64); return r; }
#include "core/xnor_conv.h"
namespace fastpose { namespace core { namespace {
#include "core/xnor_conv_avx512_kernel.h"
}
void xnor_popcount_block_avx512(const uint64_t* x, int64_t xstride, int npix, const uint64_t* w, int64_t wstride,
                                int nout, const int64_t* xoff, const int64_t* woff, int nseg, int64_t L,
                                int32_t* dots, int64_t dots_ostride) {
  xnor512_run(x, xstride, npix, w, wstride, nout, xoff, woff, nseg, L, dots, dots_ostride);
}
}}
