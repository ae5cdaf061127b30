// AVX-512 jobs of the table GEMM (xnor_ste_gemm.h): 16 output channels per vector, 24 accumulators.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/xnor_ste_gemm.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma")
namespace fastpose {
namespace core {
namespace {
#include "core/simd/vec_avx512.h"
#include "core/xnor_ste_gemm_kernel.h"
}  // namespace

void ste_weight_jobs_avx512(const SteWeightProblem& p, const SteWeightPlan& pl, const uint8_t* nib,
                            const uint8_t* zero, float* gwt, int64_t begin, int64_t end) {
  ste_weight_jobs_impl<VecAvx512, 24>(p, pl, nib, zero, gwt, begin, end);
}

// 64 channels' nibbles at once: each pixel's sign word becomes a byte mask, and-ed with its bit.
void ste_weight_nibbles_avx512(const SteWeightProblem& p, const SteWeightPlan& pl, uint8_t* nib, int64_t begin,
                               int64_t end) {
  const __m512i bit[4] = {_mm512_set1_epi8(1), _mm512_set1_epi8(2), _mm512_set1_epi8(4), _mm512_set1_epi8(8)};
  for_each_nibble_position(p, pl, nib, begin, end, [&](const uint64_t* const* wj, uint8_t* dst) {
    for (int64_t c = 0; c < pl.CinN; c += 64) {
      __m512i v = _mm512_setzero_si512();
      if (c < 64 * p.CW)
        for (int j = 0; j < 4; ++j)
          if (wj[j]) v = _mm512_or_si512(v, _mm512_maskz_mov_epi8(static_cast<__mmask64>(wj[j][c >> 6]), bit[j]));
      const int64_t left = std::min<int64_t>(64, pl.CinN - c);
      _mm512_mask_storeu_epi8(dst + c, left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1, v);
    }
  });
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
