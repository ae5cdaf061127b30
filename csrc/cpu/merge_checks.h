// Shared argument checks and layout handling of the upsample_add / hr_fuse CPU ops.
#pragma once
#include <ATen/ATen.h>

#include "core/isa.h"
#include "core/upsample_add.h"

namespace fastpose {
namespace merge_cpu {

inline core::ElemType elem_type(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return core::ElemType::F32;
    case at::kHalf:
      return core::ElemType::F16;
    case at::kBFloat16:
      return core::ElemType::BF16;
    case at::kDouble:
      return core::ElemType::F64;
    default:
      TORCH_CHECK_TYPE(false, op, ": expected a float32, float16, bfloat16 or float64 tensor, got ", t.scalar_type());
  }
}

// The output (and every input, converted if needed) uses the reference tensor's layout:
// channels_last when it is channels_last (and not also plainly contiguous), else contiguous NCHW.
inline at::MemoryFormat layout_of(const at::Tensor& ref) {
  return ref.is_contiguous(at::MemoryFormat::ChannelsLast) && !ref.is_contiguous() ? at::MemoryFormat::ChannelsLast
                                                                                    : at::MemoryFormat::Contiguous;
}

// The low-resolution input's description against an output of size (H, W).
inline core::MergeInput low_input(const at::Tensor& low, const at::Tensor& ref, const char* op, const char* name) {
  TORCH_CHECK_VALUE(low.dim() == 4, op, ": ", name, " must be (N, C, H, W), got shape ", low.sizes());
  TORCH_CHECK_VALUE(low.size(0) == ref.size(0) && low.size(1) == ref.size(1), op, ": ", name,
                    " must match the batch and channels (", ref.size(0), ", ", ref.size(1), "), got shape ",
                    low.sizes());
  TORCH_CHECK_TYPE(low.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", low.scalar_type(),
                   " but expected ", ref.scalar_type());
  TORCH_CHECK_VALUE(low.size(2) >= 1 && low.size(3) >= 1 && ref.size(2) % low.size(2) == 0 &&
                        ref.size(3) % low.size(3) == 0,
                    op, ": ", name, " of spatial size (", low.size(2), ", ", low.size(3),
                    ") is not an integer factor below the output size (", ref.size(2), ", ", ref.size(3), ")");
  core::MergeInput in;
  in.H = low.size(2);
  in.W = low.size(3);
  in.sh = ref.size(2) / low.size(2);
  in.sw = ref.size(3) / low.size(3);
  return in;
}

inline core::MergeShape shape_of(const at::Tensor& ref, at::MemoryFormat fmt, const char* op) {
  core::MergeShape s;
  s.type = elem_type(ref, op);
  s.nhwc = fmt == at::MemoryFormat::ChannelsLast;
  s.isa = core::active_isa();
  s.N = ref.size(0);
  s.C = ref.size(1);
  s.H = ref.size(2);
  s.W = ref.size(3);
  return s;
}

// Grain: units of roughly 16k elements each.
inline int64_t grain(int64_t units, int64_t elems) {
  const int64_t per = units > 0 ? std::max<int64_t>(1, elems / units) : 1;
  return std::max<int64_t>(1, 16384 / per);
}

}  // namespace merge_cpu
}  // namespace fastpose
