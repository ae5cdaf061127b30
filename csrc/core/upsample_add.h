// Nearest upsampling by integer factors, fused with the additions that consume it: the hourglass
// skip merge (upsample_add) and HRNet's multi-resolution fusion (hr_fuse), forward and backward.
// Torch-free, on contiguous NCHW or NHWC buffers; the caller splits the work into units (see each
// function) and runs them in parallel. T is the storage type (float, double, or uint16_t holding
// float16 / bfloat16 as `type` says); arithmetic is in float (double for double).
//
// Nearest rule with integer factors s: output row h reads input row h / s (PyTorch's
// floor(h * in / out)). Every unit covers whole blocks of every low-resolution input, so units never
// write the same element and backward sums need no atomics.
#pragma once
#include <cstdint>

#include "core/dtypes.h"
#include "core/isa.h"

namespace fastpose {
namespace core {

struct MergeInput {
  const void* data = nullptr;
  int64_t H = 0, W = 0;  // its spatial size; the output is (H * sh, W * sw)
  int64_t sh = 1, sw = 1;
};

struct MergeShape {
  ElemType type = ElemType::F32;
  Isa isa = Isa::Portable;  // for the 16-bit row conversions (the caller passes active_isa())
  bool nhwc = false;
  int64_t N = 0, C = 0, H = 0, W = 0;  // output (and skip / xs[0]) size
};

// out = skip + up(low). Units: NCHW: (n, c, low row) = N*C*Hl units; NHWC: (n, low row) = N*Hl.
int64_t upsample_add_units(const MergeShape& s, const MergeInput& low);
void upsample_add_forward(const MergeShape& s, const MergeInput& low, const void* skip, void* out, int64_t begin,
                          int64_t end);
// grad_low[block] = sum of grad over the block. Same units.
void upsample_add_backward(const MergeShape& s, const MergeInput& low, const void* grad, void* grad_low,
                           int64_t begin, int64_t end);

// out = relu?(x0 + sum_j up(xs[j])), xs[0] at the output size. Units: groups of L output rows, L the
// least common multiple of the row factors: NCHW (n, c, group), NHWC (n, group).
int64_t hr_fuse_rows_per_unit(const MergeInput* xs, int n_inputs);
int64_t hr_fuse_units(const MergeShape& s, const MergeInput* xs, int n_inputs);
void hr_fuse_forward(const MergeShape& s, const MergeInput* xs, int n_inputs, bool relu, void* out, int64_t begin,
                     int64_t end);
// One pass over grad (and out, for the ReLU mask): grads[0] = grad * (out > 0), grads[j] the block
// sums of that for the low-resolution inputs. out may be null when relu is false.
void hr_fuse_backward(const MergeShape& s, const MergeInput* xs, int n_inputs, bool relu, const void* grad,
                      const void* out, void* const* grads, int64_t begin, int64_t end);

}  // namespace core
}  // namespace fastpose
