// AVX-512 rows of the input-gradient permute GEMM (xnor_ste_input.h): 16-entry tables, groups of four
// output channels, up to 4 x 8 accumulators.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/xnor_ste_input.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
namespace fastpose {
namespace core {
namespace {

struct PermAvx512 {
  using F = __m512;
  using I = __m512i;
  static constexpr int L = 16, G = 4, kMaxCv = 4;
  static __mmask16 tail(int n) {
    return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n > 0 ? n : 0)) - 1u);
  }
  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static F load_partial(const float* p, int n) { return _mm512_maskz_loadu_ps(tail(n), p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static I loadi(const int32_t* p) { return _mm512_loadu_si512(p); }
  static F perm(I idx, F table) { return _mm512_permutexvar_ps(idx, table); }
  // The first n lanes to out, zero where keep's bit is clear.
  static void store_window(float* out, F v, uint32_t keep, int n) {
    _mm512_mask_storeu_ps(out, tail(n), _mm512_maskz_mov_ps(static_cast<__mmask16>(keep), v));
  }
};

#include "core/xnor_ste_input_kernel.h"

}  // namespace

void ste_input_rows_avx512(const SteInputProblem& p, const SteInputPlan& pl, const int32_t* idx, float* ring,
                           int64_t begin, int64_t end) {
  SteInputKernel<PermAvx512>(p, pl, idx).rows(ring, begin, end);
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
