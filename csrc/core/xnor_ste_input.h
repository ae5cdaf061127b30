// The input-gradient GEMM of the XNOR convolution's straight-through backward, with the filters' +-1
// signs used as permute indices instead of multipliers, torch-free.
//
//   GX[n, y, x, ci] = pass[n, y, x, ci] ? sum over (co, kh, kw) of g'[n, co, y + ph - kh, x + pw - kw] * s[co, ci, kh, kw]
//                                       : 0
//
// with g' = g * alpha[co], output pixels outside the output image contributing nothing, s = +1 where the
// filter w >= 0 (else -1, NaN too: the forward's sign) and pass the |x| <= 1 window of the forward.
//
// Output channels are taken four at a time. The 16 signed sums +-g'[co0] +-g'[co0+1] +-g'[co0+2] +-g'[co0+3]
// of one output pixel fill one 16-float vector (the pixel's table); for 16 input channels at once, vpermps
// picks in each lane the entry whose index is that channel's four filter signs s[co0..co0+3, ci, kh, kw].
// One permute and one add stand for 64 multiply-adds (the float GEMM needs four FMAs). The indices depend on
// the filters only (built once per call); the tables on one output row (built once per row and thread, a
// ring of KH rows, each 16 * ceil(Cout / 4) floats per pixel).
//
// Float32, stride 1, dilation 1, an input gradient with unit channel stride (channels_last); AVX-512 only.
// The caller keeps oneDNN's convolution_backward for anything else.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/isa.h"

namespace fastpose {
namespace core {

struct SteInputProblem {
  int64_t N, Cin, H, W, Cout, KH, KW, ph, pw, Ho, Wo;  // Ho = H + 2 ph - KH + 1, Wo likewise
  const float* g;                                      // (N, Cout, Ho, Wo), element strides below
  int64_t gsn, gsc, gsh, gsw;
  const float* w;      // (Cout, Cin, KH, KW) contiguous: only its signs are read
  const float* alpha;  // (Cout), or null for 1
  const uint64_t* pass;  // (N, H, W, CW) words, channel c at bit c % 64 of word c / 64
  int64_t CW;
  float* gx;  // (N, H, W, Cin) with unit channel stride, element strides below
  int64_t xsn, xsh, xsw;
};

struct SteInputPlan {
  int64_t CG = 0;  // groups of four output channels (the last one zero-padded)
  int64_t CV = 0;  // 16-channel vectors of input channels (the last one partial)
  int R = 0;       // output pixels per register block
  int64_t Wp = 0;  // W rounded up to whole blocks
  int64_t lo = 0;  // output column of a table row's first entry: pw - KW + 1
  int64_t RW = 0;  // entries (columns) per table row: Wp + KW - 1, zero outside [0, Wo)
  size_t idx_ints = 0;    // the index vectors: (KH * KW, CG, CV, 16) int32
  size_t ring_floats = 0;  // one thread's tables: KH ring rows and a zero row, RW * CG * 16 floats each
};

SteInputPlan ste_input_plan(const SteInputProblem& p);

// idx[((tap * CG + cg) * CV + cv) * 16 + lane] = the four filter signs of input channel 16 cv + lane against
// output channels 4 cg + 0..3 at tap (bit j: +1 at 4 cg + j; 0 past Cout or Cin).
void ste_input_indices(const SteInputProblem& p, const SteInputPlan& plan, int32_t* idx);

// GX for the input rows (n * H + y) in [begin, end); ring: ring_floats floats, 64-byte aligned, this call's
// own. isa must be Avx512 (std::invalid_argument otherwise).
void ste_input_rows(const SteInputProblem& p, const SteInputPlan& plan, const int32_t* idx, float* ring,
                    int64_t begin, int64_t end, Isa isa);

}  // namespace core
}  // namespace fastpose
