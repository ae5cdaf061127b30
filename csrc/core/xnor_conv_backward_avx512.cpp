// AVX-512 pixel loops of the straight-through backward (called only when cpuid has AVX-512 F + BW):
// 16 (float32) or 8 (float64) channels of sign or pass bits become a lane mask directly, so sign(x) is
// one masked blend per vector and the |x| <= 1 window one zero-masked load.
#include <immintrin.h>

#include "core/xnor_conv_backward.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2")
namespace fastpose {
namespace core {
namespace {

template <int L>
inline uint32_t lane_bits(const uint64_t* words, int64_t c) {
  return static_cast<uint32_t>((words[c >> 6] >> (c & 63)) & ((1u << L) - 1));
}

template <int L>
inline uint32_t tail_mask(int64_t left) {
  return left >= L ? (1u << L) - 1 : (1u << left) - 1;
}

}  // namespace

void ste_unpack_px_avx512(const uint64_t* words, int64_t C, float* dst) {
  const __m512 one = _mm512_set1_ps(1.f), minus = _mm512_set1_ps(-1.f);
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 t = static_cast<__mmask16>(tail_mask<16>(C - c));
    _mm512_mask_storeu_ps(dst + c, t, _mm512_mask_blend_ps(static_cast<__mmask16>(lane_bits<16>(words, c)), minus, one));
  }
}

void ste_unpack_px_avx512(const uint64_t* words, int64_t C, double* dst) {
  const __m512d one = _mm512_set1_pd(1.0), minus = _mm512_set1_pd(-1.0);
  for (int64_t c = 0; c < C; c += 8) {
    const __mmask8 t = static_cast<__mmask8>(tail_mask<8>(C - c));
    _mm512_mask_storeu_pd(dst + c, t, _mm512_mask_blend_pd(static_cast<__mmask8>(lane_bits<8>(words, c)), minus, one));
  }
}

void ste_mask_px_avx512(const uint64_t* words, int64_t C, const float* g, float* out) {
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 t = static_cast<__mmask16>(tail_mask<16>(C - c));
    const __mmask16 k = static_cast<__mmask16>(lane_bits<16>(words, c)) & t;
    _mm512_mask_storeu_ps(out + c, t, _mm512_maskz_loadu_ps(k, g + c));
  }
}

void ste_mask_px_avx512(const uint64_t* words, int64_t C, const double* g, double* out) {
  for (int64_t c = 0; c < C; c += 8) {
    const __mmask8 t = static_cast<__mmask8>(tail_mask<8>(C - c));
    const __mmask8 k = static_cast<__mmask8>(lane_bits<8>(words, c)) & t;
    _mm512_mask_storeu_pd(out + c, t, _mm512_maskz_loadu_pd(k, g + c));
  }
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
