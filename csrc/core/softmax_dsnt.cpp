// Dispatcher of the softmax + DSNT kernel and its portable (scalar) instantiations. float64 always
// runs the portable path with double accumulation (it exists for gradcheck).
#include "core/softmax_dsnt.h"

#include <cmath>
#include <stdexcept>
#include <vector>

namespace fastpose {
namespace core {

#if defined(__x86_64__)
int64_t softmax_dsnt_forward_avx2(const DsntProblem&, int64_t, int64_t, float*, float*, float*);
void softmax_dsnt_backward_avx2(const DsntProblem&, int64_t, int64_t, const float*, const float*, const float*, void*,
                                float*);
int64_t softmax_dsnt_forward_avx512(const DsntProblem&, int64_t, int64_t, float*, float*, float*);
void softmax_dsnt_backward_avx512(const DsntProblem&, int64_t, int64_t, const float*, const float*, const float*,
                                  void*, float*);
#endif

namespace {
#include "core/simd/vec_scalar.h"
#include "core/softmax_dsnt_kernel.h"

template <class T>
std::vector<T> scratch_for(const DsntProblem& p) {
  return std::vector<T>(static_cast<size_t>(DsntKernel<VecScalar<T>>::scratch_elems(p) + 256));  // + the widest vector's padding
}

void validate(const DsntProblem& p) {
  if (p.H < 1 || p.W < 1) throw std::invalid_argument("softmax_dsnt: H and W must be >= 1");
  if (p.reg != DsntReg::None && p.target == nullptr) throw std::invalid_argument("softmax_dsnt: reg needs a target");
}
}  // namespace

int64_t softmax_dsnt_forward(const DsntProblem& p, int64_t begin, int64_t end, void* stats, void* div, Isa isa) {
  validate(p);
  if (begin >= end) return 0;
  if (p.type == ElemType::F64) {
    auto buf = scratch_for<double>(p);
    DsntKernel<VecScalar<double>> k(p, buf.data());
    return k.forward(begin, end, static_cast<double*>(stats), static_cast<double*>(div));
  }
  auto buf = scratch_for<float>(p);
  float* st = static_cast<float*>(stats);
  float* dv = static_cast<float*>(div);
#if defined(__x86_64__)
  if (isa == Isa::Avx512) return softmax_dsnt_forward_avx512(p, begin, end, st, dv, buf.data());
  if (isa == Isa::Avx2) return softmax_dsnt_forward_avx2(p, begin, end, st, dv, buf.data());
#endif
  DsntKernel<VecScalar<float>> k(p, buf.data());
  return k.forward(begin, end, st, dv);
}

void softmax_dsnt_backward(const DsntProblem& p, int64_t begin, int64_t end, const void* stats,
                           const void* grad_coords, const void* grad_div, void* grad_logits, Isa isa) {
  validate(p);
  if (begin >= end) return;
  if (p.type == ElemType::F64) {
    auto buf = scratch_for<double>(p);
    DsntKernel<VecScalar<double>> k(p, buf.data());
    k.backward(begin, end, static_cast<const double*>(stats), static_cast<const double*>(grad_coords),
               static_cast<const double*>(grad_div), grad_logits);
    return;
  }
  auto buf = scratch_for<float>(p);
  const float* st = static_cast<const float*>(stats);
  const float* gc = static_cast<const float*>(grad_coords);
  const float* gd = static_cast<const float*>(grad_div);
#if defined(__x86_64__)
  if (isa == Isa::Avx512) return softmax_dsnt_backward_avx512(p, begin, end, st, gc, gd, grad_logits, buf.data());
  if (isa == Isa::Avx2) return softmax_dsnt_backward_avx2(p, begin, end, st, gc, gd, grad_logits, buf.data());
#endif
  DsntKernel<VecScalar<float>> k(p, buf.data());
  k.backward(begin, end, st, gc, gd, grad_logits);
}

}  // namespace core
}  // namespace fastpose
