// The weight-gradient GEMM of the XNOR convolution's straight-through backward, with the +-1 operand
// used as a table index instead of a multiplier ("four Russians"), torch-free.
//
//   GW[co, ci, kh, kw] = sum over (n, y, x) of g[n, co, y, x] * s[n, ci, y + kh - ph, x + kw - pw]
//
// where s = +1 / -1 from the forward's sign bits and the padding (0 or -1) outside the image. Output pixels
// are taken four at a time along a row: the 16 signed sums +-g[x0] +-g[x0+1] +-g[x0+2] +-g[x0+3] of a
// group are a table (16 rows of output channels), and each (ci, kh, kw) of the group adds one row of it,
// the one whose index is the four sign bits s[ci] at the four shifted input pixels. That is one vector add
// per four multiply-adds of the float GEMM, and the 16-row table costs 26 adds per group and vector of
// channels, shared by every (ci, kh, kw).
//
// Zero padding: the kernel reads out-of-image pixels as -1 (sign bit 0); finish then adds back, per tap
// and output channel, the sum of g over the output pixels whose tap falls outside the image.
// Float32 only; stride 1 and dilation 1 (the caller keeps oneDNN for anything else).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/isa.h"
#include "core/xnor_ste_grad.h"

namespace fastpose {
namespace core {

struct SteWeightProblem : SteGrad {
  const uint64_t* sign;  // (N, H, W, CW) words, channel c at bit c % 64 of word c / 64
  int64_t CW;
  bool pad_zero;  // pad_value 0 (else -1)
};

// Sizes of one call's work buffers and how the work splits into jobs. A job is one (output channel
// chunk, tap, input channel block); jobs write disjoint parts of gwt, so any split over threads is
// race-free.
struct SteWeightPlan {
  int V = 0, B = 0;         // vectors of output channels per table row; input channels per register block
  int64_t CoC = 0;          // output channels per chunk (V vectors)
  int64_t chunks = 0, CoP = 0;  // chunks; output channels padded to whole chunks
  int64_t CinP = 0;         // input channels padded to whole blocks
  int64_t CinN = 0;         // bytes per nibble position (CinP plus 8: the portable writer's 8-byte stores)
  int64_t Wg = 0, NW = 0;   // pixel groups per output row; nibble positions per input row
  int64_t groups = 0, cblocks = 0, jobs = 0;
  size_t nib_bytes = 0, zero_bytes = 0, gwt_floats = 0;  // gwt: (tap, CinP, CoP) floats
};

// isa Avx512 / Avx2 / Portable: the vector width the jobs run with.
SteWeightPlan ste_weight_plan(const SteWeightProblem& p, Isa isa);

// nib[(n * H + h) * NW + xs][ci] = the sign bits of channel ci at input pixels xs - pw + 0..3 of row
// (n, h) as a 4-bit index (bit j: pixel xs - pw + j; 0 outside the image or past Cin); rows [begin, end)
// of the N * H. The zero row (zero_bytes) stands for the rows above and below the image.
void ste_weight_nibbles(const SteWeightProblem& p, const SteWeightPlan& plan, uint8_t* nib, int64_t begin,
                        int64_t end, Isa isa);

// Jobs [begin, end): GW with out-of-image pixels read as -1, written (not added) to gwt.
void ste_weight_jobs(const SteWeightProblem& p, const SteWeightPlan& plan, const uint8_t* nib, const uint8_t* zero,
                     float* gwt, int64_t begin, int64_t end, Isa isa);

// After every job: GW for output channels [begin, end) into G, contiguous (Cout, Cin, KH, KW) (the
// weight's order), with the zero-padding correction added when pad_zero. A cache-blocked transpose: the
// alpha chain then reads each filter contiguously.
void ste_weight_finish(const SteWeightProblem& p, const SteWeightPlan& plan, const float* gwt, float* G,
                       int64_t begin, int64_t end);

}  // namespace core
}  // namespace fastpose
