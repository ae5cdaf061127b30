// AVX2 rows of the input-gradient permute GEMM (xnor_ste_input.h): vpermps ymm takes 8-entry tables, so
// output channels go three at a time (24 multiply-adds per permute, three FMAs' worth); up to 2 x 8
// accumulators in the 16 ymm registers.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/xnor_ste_input.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace fastpose {
namespace core {
namespace {

struct PermAvx2 {
  using F = __m256;
  using I = __m256i;
  static constexpr int L = 8, G = 3, kMaxCv = 2;
  static I lanes() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static I tail(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes()); }
  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static F load_partial(const float* p, int n) { return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, tail(n)); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static I loadi(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static F perm(I idx, F table) { return _mm256_permutevar8x32_ps(table, idx); }
  // The first n lanes to out, zero where keep's bit is clear.
  static void store_window(float* out, F v, uint32_t keep, int n) {
    const I bit = _mm256_sllv_epi32(_mm256_set1_epi32(1), lanes());
    const I on = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(keep & 0xff)), bit), bit);
    const F w = _mm256_and_ps(v, _mm256_castsi256_ps(on));
    if (n >= 8)
      _mm256_storeu_ps(out, w);
    else
      _mm256_maskstore_ps(out, tail(n), w);
  }
};

#include "core/xnor_ste_input_kernel.h"

}  // namespace

void ste_input_rows_avx2(const SteInputProblem& p, const SteInputPlan& pl, const int32_t* idx, float* ring,
                         int64_t begin, int64_t end) {
  SteInputKernel<PermAvx2>(p, pl, idx).rows(ring, begin, end);
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
