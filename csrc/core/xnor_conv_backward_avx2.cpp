// AVX2 sign / pass bits of channels-contiguous float32 rows (called only when cpuid has AVX2): eight
// channels per compare, the masks gathered into the 64-bit words with movemask.
#include <immintrin.h>

#include <algorithm>

#include "core/xnor_conv_backward.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2")
namespace fastpose {
namespace core {

void ste_pack_row_nhwc_f32_avx2(const float* src, int64_t C, int64_t W, int64_t sw, uint64_t* sign, uint64_t* pass,
                                int64_t CW) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t w = 0; w < W; ++w) {
    const float* px = src + w * sw;
    uint64_t* sd = sign + w * CW;
    uint64_t* pd = pass + w * CW;
    int64_t c = 0;
    for (int64_t k = 0; k < CW; ++k) {
      uint64_t sb = 0, pb = 0;
      const int64_t c1 = std::min<int64_t>(C, 64 * k + 64);
      for (; c + 8 <= c1; c += 8) {
        const __m256 v = _mm256_loadu_ps(px + c);
        // ordered compares: NaN gives 0 in both; -0.0 >= 0 holds
        const uint64_t s = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GE_OQ)));
        const uint64_t p =
            static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(v, absmask), one, _CMP_LE_OQ)));
        sb |= s << (c & 63);
        pb |= p << (c & 63);
      }
      for (; c < c1; ++c) {
        const float v = px[c];
        sb |= static_cast<uint64_t>(v >= 0.f) << (c & 63);
        pb |= static_cast<uint64_t>(v <= 1.f && v >= -1.f) << (c & 63);
      }
      sd[k] = sb;
      pd[k] = pb;
    }
  }
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2")
namespace fastpose {
namespace core {
namespace {

// Eight bits -> eight all-ones / all-zeros 32-bit lanes.
inline __m256 bits8_to_lanes(uint32_t b) {
  const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i v = _mm256_and_si256(_mm256_set1_epi32(static_cast<int>(b)), sel);
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, sel));
}

}  // namespace

void ste_unpack_px_f32_avx2(const uint64_t* words, int64_t C, float* dst) {
  const __m256 one = _mm256_set1_ps(1.f), minus = _mm256_set1_ps(-1.f);
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    const uint32_t b = static_cast<uint32_t>((words[c >> 6] >> (c & 63)) & 0xffu);
    _mm256_storeu_ps(dst + c, _mm256_blendv_ps(minus, one, bits8_to_lanes(b)));
  }
  for (; c < C; ++c) dst[c] = ((words[c >> 6] >> (c & 63)) & 1) ? 1.f : -1.f;
}

void ste_mask_px_f32_avx2(const uint64_t* words, int64_t C, const float* g, float* out) {
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    const uint32_t b = static_cast<uint32_t>((words[c >> 6] >> (c & 63)) & 0xffu);
    _mm256_storeu_ps(out + c, _mm256_and_ps(_mm256_loadu_ps(g + c), bits8_to_lanes(b)));
  }
  for (; c < C; ++c) out[c] = ((words[c >> 6] >> (c & 63)) & 1) ? g[c] : 0.f;
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
