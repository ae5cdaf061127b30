// Fused softmax + DSNT on raw pointers (torch-free; shared by the extension and the C++ tests).
//
// For each map (b, j) of logits (B, J, H, W): p = softmax over all H*W positions, then the
// expectation of the pixel-centre grid x_i = (2i+1)/W - 1, y_r = (2r+1)/H - 1. One read of the
// logits: per row, the row maximum (from L1), a rescale of the running sums when the maximum grows
// (online softmax), then one vector exp per element feeding the sum and the two weighted sums.
// Optionally the KL or JS divergence between p and dsntnn's normalised Gaussian at a target, in a
// second sweep over the same map while it is still in cache.
#pragma once
#include <cstdint>

#include "core/dtypes.h"
#include "core/isa.h"

namespace fastpose {
namespace core {

enum class DsntReg { None = 0, KL = 1, JS = 2 };

struct DsntProblem {
  const void* logits = nullptr;  // element (b, j, h, w) at b*stride_b + j*stride_j + h*stride_h + w
  ElemType type = ElemType::F32;
  int64_t B = 0, J = 0, H = 0, W = 0;
  int64_t stride_b = 0, stride_j = 0, stride_h = 0;  // in elements; rows are contiguous
  DsntReg reg = DsntReg::None;
  const void* target = nullptr;  // (B*J, 2) normalised (x, y), accumulator type; only with reg
  double sigma = 1.0;            // target Gaussian's standard deviation in pixels; only with reg
  // Backward: write the gradient with non-temporal stores where rows allow (outputs much larger than
  // a core's L2: the stores then skip the read-for-ownership of every line, ~15% of a pass).
  bool stream_out = false;
};

// The accumulator type is double for F64 inputs and float otherwise; `stats`, `div`, `target`,
// `grad_coords` and `grad_div` point to arrays of that type.
//
// Forward over maps [begin, end): stats[m] = (ref, sum of exp(l - ref), x, y) (4 values per map),
// ref the value subtracted before exp: the map's maximum, or (contiguous maps on the CPU, where the
// reference lags one chunk behind) up to 30 below it;
// div[m] the divergence when reg != None. Returns how many of those maps had only -inf logits
// (their stats are NaN): the caller raises.
int64_t softmax_dsnt_forward(const DsntProblem& p, int64_t begin, int64_t end, void* stats, void* div, Isa isa);

// Backward over maps [begin, end): grad_logits (contiguous (B, J, H, W), the input's element type)
// = d/dlogits of sum(grad_coords * coords) + sum(grad_div * div), from the logits and the saved
// stats alone (no probabilities are stored). grad_div may be null when reg == None.
void softmax_dsnt_backward(const DsntProblem& p, int64_t begin, int64_t end, const void* stats,
                           const void* grad_coords, const void* grad_div, void* grad_logits, Isa isa);

}  // namespace core
}  // namespace fastpose
