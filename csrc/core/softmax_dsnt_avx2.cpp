// AVX2 + FMA + F16C instantiation of the softmax + DSNT kernel (called only when cpuid has them).
#include <immintrin.h>

#include "core/softmax_dsnt.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace fastpose {
namespace core {
namespace {
#include "core/simd/vec_avx2.h"
#include "core/softmax_dsnt_kernel.h"
}  // namespace

int64_t softmax_dsnt_forward_avx2(const DsntProblem& p, int64_t begin, int64_t end, float* stats, float* div,
                                  float* scratch) {
  DsntKernel<VecAvx2> k(p, scratch);
  return k.forward(begin, end, stats, div);
}

void softmax_dsnt_backward_avx2(const DsntProblem& p, int64_t begin, int64_t end, const float* stats,
                                const float* gcoords, const float* gdiv, void* out, float* scratch) {
  DsntKernel<VecAvx2> k(p, scratch);
  k.backward(begin, end, stats, gcoords, gdiv, out);
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
