// AVX-512 (F + BW + VL + VPOPCNTDQ) kernels of the XNOR convolution, called only when cpuid has them:
// the popcount GEMM (body in xnor_conv_avx512_kernel.h), float32 bit packing of NCHW / NHWC rows, and
// the register-only xor + popcount + add loop that measures the machine's limit for the GEMM.
#include <immintrin.h>

#include <algorithm>

#include "core/xnor_conv.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,popcnt")
namespace fastpose {
namespace core {
namespace {

#include "core/xnor_conv_avx512_kernel.h"

}  // namespace

#include "core/xnor_conv_avx512_entry.h"

int64_t xnor_popcount_peak_avx512(int64_t iters) {
  // 16 independent accumulators over 4 x 4 distinct operand pairs, as in the GEMM's register block; the asm barrier keeps
  // the compiler from hoisting the loop-invariant xors (the operands "change" every iteration).
  constexpr int A = 16, X = 4;
  __m512i acc[A], v[X];
  for (int i = 0; i < A; ++i) acc[i] = _mm512_setzero_si512();
  for (int i = 0; i < X; ++i) v[i] = _mm512_set1_epi64(0x9e3779b97f4a7c15ll * (i + 1));
  __m512i wv[A / X];
  for (int i = 0; i < A / X; ++i) wv[i] = _mm512_set1_epi64(0x0123456789abcdefll + i);
  for (int64_t it = 0; it < iters; ++it) {
    for (int i = 0; i < X; ++i) __asm__ volatile("" : "+v"(v[i]));
    for (int i = 0; i < A; ++i)
      acc[i] = _mm512_add_epi64(acc[i], _mm512_popcnt_epi64(_mm512_xor_si512(v[i % X], wv[i / X])));
  }
  alignas(64) int64_t t[8];
  __m512i s = acc[0];
  for (int i = 1; i < A; ++i) s = _mm512_add_epi64(s, acc[i]);
  _mm512_store_si512(t, s);
  volatile int64_t sink = t[0];
  (void)sink;
  return iters * A * 512;
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
