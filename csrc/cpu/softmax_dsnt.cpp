// CPU kernels of the softmax + DSNT ops: argument checks, then core/ over maps in parallel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "core/softmax_dsnt.h"
#include "cpu/hugepages.h"

namespace fastpose {
namespace {

using core::DsntProblem;
using core::DsntReg;
using core::ElemType;

ElemType elem_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return ElemType::F32;
    case at::kHalf:
      return ElemType::F16;
    case at::kBFloat16:
      return ElemType::BF16;
    case at::kDouble:
      return ElemType::F64;
    default:
      TORCH_CHECK_TYPE(false, "softmax_dsnt: logits must be float32, float16, bfloat16 or float64, got ",
                       t.scalar_type());
  }
}

// Auxiliary inputs are converted to the accumulator type: anything but a real float would convert
// silently (complex drops its imaginary part, integers and bools become 0/1 "probabilities").
void check_real_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be a float32, float16, bfloat16 or float64 tensor, got ", t.scalar_type());
}

void check_sigma(double sigma) {
  TORCH_CHECK_VALUE(std::isfinite(sigma) && sigma > 0, "softmax_dsnt: sigma must be a finite number > 0, got ", sigma);
}

at::ScalarType acc_type(const at::Tensor& logits) {
  return logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_logits(const at::Tensor& logits) {
  TORCH_CHECK_VALUE(logits.dim() == 4, "softmax_dsnt: logits must be (B, J, H, W), got shape ", logits.sizes());
  elem_type(logits);
  TORCH_CHECK_VALUE(logits.size(2) >= 1 && logits.size(3) >= 1, "softmax_dsnt: logits needs H >= 1 and W >= 1, got ",
                    logits.sizes());
}

// Rows must be contiguous; any batch/joint/row strides are fine (slices cost nothing).
at::Tensor rows_contiguous(const at::Tensor& logits) {
  return logits.stride(3) == 1 || logits.size(3) == 1 ? logits : logits.contiguous();
}

DsntProblem problem(const at::Tensor& x) {
  DsntProblem p;
  p.logits = x.data_ptr();
  p.type = elem_type(x);
  p.B = x.size(0);
  p.J = x.size(1);
  p.H = x.size(2);
  p.W = x.size(3);
  p.stride_b = x.stride(0);
  p.stride_j = x.stride(1);
  p.stride_h = x.stride(2);
  return p;
}


int64_t grain(const DsntProblem& p) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, p.H * p.W)); }

void run_forward(const DsntProblem& p, at::Tensor& stats, at::Tensor* div) {
  const core::Isa isa = core::active_isa();
  std::atomic<int64_t> bad{0};
  void* st = stats.data_ptr();
  void* dv = div ? div->data_ptr() : nullptr;
  at::parallel_for(0, p.B * p.J, grain(p), [&](int64_t begin, int64_t end) {
    bad += core::softmax_dsnt_forward(p, begin, end, st, dv, isa);
  });
  TORCH_CHECK_VALUE(bad.load() == 0, "softmax_dsnt: ", bad.load(),
                    " map(s) of logits have every entry -inf; each map needs at least one finite logit");
}

// A plain loop rather than copy_ of a strided slice: TensorIterator's set-up costs microseconds,
// a visible share of a small call's time.
template <class Out, class Acc>
void fill_coords(const Acc* st, Out* out, int64_t maps) {
  for (int64_t m = 0; m < maps; ++m) {
    out[2 * m] = static_cast<Out>(st[4 * m + 2]);
    out[2 * m + 1] = static_cast<Out>(st[4 * m + 3]);
  }
}

at::Tensor coords_from_stats(const at::Tensor& stats, const at::Tensor& logits) {
  at::Tensor coords = at::empty({stats.size(0), stats.size(1), 2}, logits.options());
  const int64_t maps = stats.size(0) * stats.size(1);
  switch (logits.scalar_type()) {
    case at::kDouble:
      fill_coords(stats.data_ptr<double>(), coords.data_ptr<double>(), maps);
      break;
    case at::kFloat:
      fill_coords(stats.data_ptr<float>(), coords.data_ptr<float>(), maps);
      break;
    case at::kHalf:
      fill_coords(stats.data_ptr<float>(), coords.data_ptr<at::Half>(), maps);
      break;
    default:
      fill_coords(stats.data_ptr<float>(), coords.data_ptr<at::BFloat16>(), maps);
      break;
  }
  return coords;
}

std::tuple<at::Tensor, at::Tensor> softmax_dsnt_cpu(const at::Tensor& logits_in) {
  check_logits(logits_in);
  const at::Tensor logits = rows_contiguous(logits_in);
  DsntProblem p = problem(logits);
  at::Tensor stats = at::empty({p.B, p.J, 4}, logits.options().dtype(acc_type(logits)));
  run_forward(p, stats, nullptr);
  return {coords_from_stats(stats, logits), stats};
}

at::Tensor target_acc(const at::Tensor& target, const at::Tensor& logits) {
  check_real_float(target, "softmax_dsnt", "target");
  TORCH_CHECK_VALUE(target.dim() == 3 && target.size(0) == logits.size(0) && target.size(1) == logits.size(1) &&
                        target.size(2) == 2,
                    "softmax_dsnt: target must be (B, J, 2) = (", logits.size(0), ", ", logits.size(1),
                    ", 2), got shape ", target.sizes());
  return target.to(acc_type(logits)).contiguous();
}

DsntReg reg_kind(int64_t reg) {
  TORCH_CHECK_VALUE(reg == 1 || reg == 2, "softmax_dsnt: reg must be 1 (KL) or 2 (JS), got ", reg);
  return static_cast<DsntReg>(reg);
}

// target: (B*J, 2) in the accumulator type, kept alive by the caller.
DsntProblem reg_problem(const at::Tensor& logits, const at::Tensor& target, double sigma, int64_t reg) {
  DsntProblem p = problem(logits);
  p.reg = reg_kind(reg);
  p.target = target.data_ptr();
  p.sigma = sigma;
  return p;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> softmax_dsnt_reg_cpu(const at::Tensor& logits_in,
                                                                    const at::Tensor& target_in, double sigma,
                                                                    int64_t reg) {
  check_logits(logits_in);
  check_sigma(sigma);
  const at::Tensor logits = rows_contiguous(logits_in);
  const at::Tensor target = target_acc(target_in, logits);
  const DsntProblem p = reg_problem(logits, target, sigma, reg);
  at::Tensor stats = at::empty({p.B, p.J, 4}, logits.options().dtype(acc_type(logits)));
  at::Tensor div = at::empty({p.B, p.J}, stats.options());
  run_forward(p, stats, &div);
  return {coords_from_stats(stats, logits), div.to(logits.scalar_type()), stats};
}

at::Tensor run_backward(const DsntProblem& p, const at::Tensor& logits, const at::Tensor& stats,
                        const at::Tensor& grad_coords, const at::Tensor* grad_div) {
  const at::ScalarType acc = acc_type(logits);
  check_real_float(grad_coords, "softmax_dsnt_backward", "grad_coords");
  check_real_float(stats, "softmax_dsnt_backward", "stats");
  TORCH_CHECK_VALUE(grad_coords.dim() == 3 && grad_coords.size(0) == p.B && grad_coords.size(1) == p.J &&
                        grad_coords.size(2) == 2,
                    "softmax_dsnt_backward: grad_coords must be (B, J, 2), got ", grad_coords.sizes());
  TORCH_CHECK_VALUE(stats.dim() == 3 && stats.size(0) == p.B && stats.size(1) == p.J && stats.size(2) == 4,
                    "softmax_dsnt_backward: stats must be (B, J, 4), got ", stats.sizes());
  const at::Tensor gc = grad_coords.to(acc).contiguous();
  const at::Tensor st = stats.to(acc).contiguous();
  at::Tensor gd;
  if (grad_div) gd = grad_div->to(acc).contiguous();
  at::Tensor out = at::empty({p.B, p.J, p.H, p.W}, logits.options().memory_format(at::MemoryFormat::Contiguous));
  advise_hugepages(out);
  DsntProblem q = p;
  q.stream_out = stream_stores(out.numel() * out.element_size());
  const core::Isa isa = core::active_isa();
  const void* stp = st.data_ptr();
  const void* gcp = gc.data_ptr();
  const void* gdp = grad_div ? gd.data_ptr() : nullptr;
  void* outp = out.data_ptr();
  at::parallel_for(0, p.B * p.J, grain(p), [&](int64_t begin, int64_t end) {
    core::softmax_dsnt_backward(q, begin, end, stp, gcp, gdp, outp, isa);
  });
  return out;
}

at::Tensor softmax_dsnt_backward_cpu(const at::Tensor& grad_coords, const at::Tensor& logits_in,
                                     const at::Tensor& stats) {
  check_logits(logits_in);
  const at::Tensor logits = rows_contiguous(logits_in);
  return run_backward(problem(logits), logits, stats, grad_coords, nullptr);
}

at::Tensor softmax_dsnt_reg_backward_cpu(const at::Tensor& grad_coords, const at::Tensor& grad_div,
                                         const at::Tensor& logits_in, const at::Tensor& target_in,
                                         const at::Tensor& stats, double sigma, int64_t reg) {
  check_logits(logits_in);
  check_sigma(sigma);
  check_real_float(grad_div, "softmax_dsnt_backward", "grad_divergence");
  const at::Tensor logits = rows_contiguous(logits_in);
  const at::Tensor target = target_acc(target_in, logits);
  const DsntProblem p = reg_problem(logits, target, sigma, reg);
  TORCH_CHECK_VALUE(grad_div.dim() == 2 && grad_div.size(0) == p.B && grad_div.size(1) == p.J,
                    "softmax_dsnt_backward: grad_divergence must be (B, J), got ", grad_div.sizes());
  return run_backward(p, logits, stats, grad_coords, &grad_div);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpose, CPU, m) {
  m.impl("softmax_dsnt", &softmax_dsnt_cpu);
  m.impl("softmax_dsnt_backward", &softmax_dsnt_backward_cpu);
  m.impl("softmax_dsnt_reg", &softmax_dsnt_reg_cpu);
  m.impl("softmax_dsnt_reg_backward", &softmax_dsnt_reg_backward_cpu);
}

}  // namespace fastpose
