// AVX2 jobs of the table GEMM (xnor_ste_gemm.h): 8 output channels per vector, 12 accumulators.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/xnor_ste_gemm.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace fastpose {
namespace core {
namespace {
#include "core/simd/vec_avx2.h"
#include "core/xnor_ste_gemm_kernel.h"
}  // namespace

void ste_weight_jobs_avx2(const SteWeightProblem& p, const SteWeightPlan& pl, const uint8_t* nib,
                          const uint8_t* zero, float* gwt, int64_t begin, int64_t end) {
  ste_weight_jobs_impl<VecAvx2, 12>(p, pl, nib, zero, gwt, begin, end);
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
