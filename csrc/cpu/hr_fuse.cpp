// CPU kernels of hr_fuse (out = relu(sum_j nearest_up(xs[j]))) and its one-pass backward.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "cpu/hugepages.h"
#include "cpu/merge_checks.h"

namespace fastpose {
namespace {

using namespace merge_cpu;

struct Prepared {
  at::MemoryFormat fmt;
  std::vector<at::Tensor> keep;  // the inputs in the output's layout (owners of the pointers)
  std::vector<core::MergeInput> in;
  core::MergeShape shape;
};

Prepared prepare(at::TensorList xs, const char* op) {
  TORCH_CHECK_VALUE(!xs.empty(), op, ": xs must hold at least one tensor");
  const at::Tensor& x0 = xs[0];
  TORCH_CHECK_VALUE(x0.dim() == 4, op, ": xs[0] must be (N, C, H, W), got shape ", x0.sizes());
  elem_type(x0, op);
  Prepared p;
  p.fmt = layout_of(x0);
  p.shape = shape_of(x0, p.fmt, op);
  for (size_t j = 0; j < xs.size(); ++j) {
    const std::string name = "xs[" + std::to_string(j) + "]";
    TORCH_CHECK_VALUE(xs[j].device() == x0.device(), op, ": ", name, " is on ", xs[j].device(), ", xs[0] on ",
                      x0.device());
    core::MergeInput in = low_input(xs[j], x0, op, name.c_str());
    p.keep.push_back(xs[j].contiguous(p.fmt));
    in.data = p.keep.back().data_ptr();
    p.in.push_back(in);
  }
  return p;
}

at::Tensor hr_fuse_cpu(at::TensorList xs, bool relu) {
  Prepared p = prepare(xs, "hr_fuse");
  at::Tensor out = at::empty(xs[0].sizes(), xs[0].options().memory_format(p.fmt));
  if (out.numel() == 0) return out;
  advise_hugepages(out);
  const int n = static_cast<int>(p.in.size());
  const int64_t units = core::hr_fuse_units(p.shape, p.in.data(), n);
  void* o = out.data_ptr();
  at::parallel_for(0, units, grain(units, out.numel()), [&](int64_t b, int64_t e) {
    core::hr_fuse_forward(p.shape, p.in.data(), n, relu, o, b, e);
  });
  return out;
}

std::vector<at::Tensor> hr_fuse_backward_cpu(const at::Tensor& grad_in, const at::Tensor& out_in, at::TensorList xs,
                                             bool relu) {
  const char* op = "hr_fuse_backward";
  Prepared p = prepare(xs, op);
  TORCH_CHECK_VALUE(grad_in.sizes() == xs[0].sizes(), op, ": grad must have xs[0]'s shape ", xs[0].sizes(),
                    ", got ", grad_in.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(grad_in.scalar_type()), op, ": grad must be a float tensor, got ",
                   grad_in.scalar_type());
  const at::Tensor grad = grad_in.to(xs[0].scalar_type()).contiguous(p.fmt);
  at::Tensor out;
  if (relu) {
    TORCH_CHECK_VALUE(out_in.sizes() == xs[0].sizes(), op, ": out must have xs[0]'s shape");
    // the kernel reads out in xs[0]'s element type: another dtype would be misread (or overrun)
    TORCH_CHECK_TYPE(out_in.scalar_type() == xs[0].scalar_type(), op, ": out has dtype ", out_in.scalar_type(),
                     " but xs[0] has ", xs[0].scalar_type());
    TORCH_CHECK_VALUE(out_in.device() == xs[0].device(), op, ": out is on ", out_in.device(), ", xs[0] on ",
                      xs[0].device());
    out = out_in.contiguous(p.fmt);
  }
  std::vector<at::Tensor> grads;
  std::vector<void*> ptrs;
  for (const at::Tensor& x : xs) {
    grads.push_back(at::empty(x.sizes(), grad.options().memory_format(p.fmt)));
    advise_hugepages(grads.back());
    ptrs.push_back(grads.back().data_ptr());
  }
  if (grad.numel() == 0) {
    for (auto& g : grads) g.zero_();
    return grads;
  }
  const int n = static_cast<int>(p.in.size());
  const int64_t units = core::hr_fuse_units(p.shape, p.in.data(), n);
  const void* gp = grad.data_ptr();
  const void* opt = relu ? out.data_ptr() : nullptr;
  at::parallel_for(0, units, grain(units, grad.numel()), [&](int64_t b, int64_t e) {
    core::hr_fuse_backward(p.shape, p.in.data(), n, relu, gp, opt, ptrs.data(), b, e);
  });
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpose, CPU, m) {
  m.impl("hr_fuse", &hr_fuse_cpu);
  m.impl("hr_fuse_backward", &hr_fuse_backward_cpu);
}

}  // namespace fastpose
