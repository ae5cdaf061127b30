// CPU kernels of upsample_add (out = skip + nearest_up(low)) and its backward.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/hugepages.h"
#include "cpu/merge_checks.h"

namespace fastpose {
namespace {

using namespace merge_cpu;

at::Tensor upsample_add_cpu(const at::Tensor& low_in, const at::Tensor& skip_in) {
  const char* op = "upsample_add";
  TORCH_CHECK_VALUE(skip_in.dim() == 4, op, ": skip must be (N, C, H, W), got shape ", skip_in.sizes());
  elem_type(skip_in, op);
  core::MergeInput low = low_input(low_in, skip_in, op, "low");
  const at::MemoryFormat fmt = layout_of(skip_in);
  const at::Tensor skip = skip_in.contiguous(fmt), lowc = low_in.contiguous(fmt);
  at::Tensor out = at::empty(skip.sizes(), skip.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  advise_hugepages(out);
  low.data = lowc.data_ptr();
  const core::MergeShape s = shape_of(skip, fmt, op);
  const int64_t units = core::upsample_add_units(s, low);
  const void* sp = skip.data_ptr();
  void* op_ = out.data_ptr();
  at::parallel_for(0, units, grain(units, out.numel()), [&](int64_t b, int64_t e) {
    core::upsample_add_forward(s, low, sp, op_, b, e);
  });
  return out;
}

at::Tensor upsample_add_backward_cpu(const at::Tensor& grad_in, const at::Tensor& low_ref) {
  const char* op = "upsample_add_backward";
  TORCH_CHECK_VALUE(grad_in.dim() == 4, op, ": grad must be (N, C, H, W), got shape ", grad_in.sizes());
  elem_type(grad_in, op);
  core::MergeInput low = low_input(low_ref, grad_in, op, "low");
  const at::MemoryFormat fmt = layout_of(grad_in);
  const at::Tensor grad = grad_in.contiguous(fmt);
  at::Tensor gl = at::empty(low_ref.sizes(), grad.options().memory_format(fmt));
  if (gl.numel() == 0) return gl;
  advise_hugepages(gl);
  const core::MergeShape s = shape_of(grad, fmt, op);
  const int64_t units = core::upsample_add_units(s, low);
  const void* gp = grad.data_ptr();
  void* glp = gl.data_ptr();
  at::parallel_for(0, units, grain(units, grad.numel()), [&](int64_t b, int64_t e) {
    core::upsample_add_backward(s, low, gp, glp, b, e);
  });
  return gl;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpose, CPU, m) {
  m.impl("upsample_add", &upsample_add_cpu);
  m.impl("upsample_add_backward", &upsample_add_backward_cpu);
}

}  // namespace fastpose
