// AVX2 + F16C row conversions (called only when cpuid has them; AVX-512 cores have them too).
#include <immintrin.h>

#include "core/convert.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace fastpose {
namespace core {

void to_float_row_avx2(ElemType type, const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  if (type == ElemType::F16) {
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    for (; i < n; ++i) dst[i] = half_to_float(src[i]);
  } else {
    for (; i + 8 <= n; i += 8) {
      const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
      _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
    for (; i < n; ++i) dst[i] = bf16_to_float(src[i]);
  }
}

void from_float_row_avx2(ElemType type, const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  if (type == ElemType::F16) {
    for (; i + 8 <= n; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else {
    // round to nearest even: u + 0x7fff + ((u >> 16) & 1); NaN keeps a quiet NaN payload
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
    for (; i + 8 <= n; i += 8) {
      const __m256 f = _mm256_loadu_ps(src + i);
      const __m256i u = _mm256_castps_si256(f);
      __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, bias), _mm256_and_si256(_mm256_srli_epi32(u, 16), one));
      const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
      r = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), nan);
      r = _mm256_srli_epi32(r, 16);
      // pack 8 x 32-bit to 8 x 16-bit (packus works per 128-bit lane: fix the order after)
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_castsi256_si128(packed));
    }
  }
  for (; i < n; ++i) dst[i] = type == ElemType::F16 ? float_to_half(src[i]) : float_to_bf16(src[i]);
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
