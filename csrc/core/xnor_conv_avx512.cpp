// AVX-512 (F + BW + VL + VPOPCNTDQ) popcount block of the XNOR convolution, called only when cpuid
// has them: 512-bit xor + vpopcntq into 64-bit lane accumulators, 4 output channels x 4 pixels per
// register block so each loaded input chunk is reused from a register by 4 filters (and each filter
// chunk by 4 pixels); the tail of a segment (L % 8 words) uses a zero-masked load.
#include <immintrin.h>

#include "core/xnor_conv.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,popcnt")
namespace fastpose {
namespace core {
namespace {

#include "core/xnor_conv_avx512_kernel.h"

}  // namespace

void xnor_popcount_block_avx512(const uint64_t* x, int64_t xstride, int npix, const uint64_t* w,
                                int64_t wstride, int nout, const int64_t* xoff, const int64_t* woff, int nseg,
                                int64_t L, int32_t* dots, int64_t dots_ostride) {
  xnor512_run(x, xstride, npix, w, wstride, nout, xoff, woff, nseg, L, dots, dots_ostride);
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
