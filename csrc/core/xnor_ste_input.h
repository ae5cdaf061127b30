// The input-gradient GEMM of the XNOR convolution's straight-through backward, with the filters' +-1
// signs used as permute indices instead of multipliers, torch-free.
//
//   GX[n, y, x, ci] = pass[n, y, x, ci] ? sum over (co, kh, kw) of g'[n, co, y + ph - kh, x + pw - kw] * s[co, ci, kh, kw]
//                                       : 0
//
// with g' = g * alpha[co], output pixels outside the output image contributing nothing, s = +1 where the
// filter w >= 0 (else -1, NaN too: the forward's sign) and pass the |x| <= 1 window of the forward.
//
// Output channels are taken G at a time. The 2^G signed sums +-g'[co0] +-...+- g'[co0 + G - 1] of one
// output pixel fill one vector (the pixel's table); for a vector of input channels at once, vpermps picks in
// each lane the entry whose index is that channel's G filter signs s[co0..co0+G-1, ci, kh, kw]. AVX-512:
// G = 4, 16 lanes, one permute and one add for 64 multiply-adds (the float GEMM needs four FMAs); AVX2:
// G = 3, 8 lanes, 24 per permute (three FMAs). The indices depend on the filters only (built once per
// call); the tables on one output row (built once per row and thread, a ring of KH rows).
//
// Float32, stride 1, dilation 1, an input gradient with unit channel stride (channels_last); AVX-512 and
// AVX2. The caller keeps oneDNN's convolution_backward for anything else.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/isa.h"
#include "core/xnor_ste_grad.h"

namespace fastpose {
namespace core {

struct SteInputProblem : SteGrad {
  const float* w;      // (Cout, Cin, KH, KW) contiguous: only its signs are read
  const float* alpha;  // (Cout), or null for 1
  const uint64_t* pass;  // (N, H, W, CW) words, channel c at bit c % 64 of word c / 64
  int64_t CW;
  float* gx;  // (N, H, W, Cin) with unit channel stride, element strides below
  int64_t xsn, xsh, xsw;
};

struct SteInputPlan {
  int G = 0, L = 0;  // output channels per group (index bits), lanes per vector: 4 / 16 AVX-512, 3 / 8 AVX2
  int64_t CG = 0;    // groups of G output channels (the last one zero-padded)
  int64_t CV = 0;    // L-channel vectors of input channels (the last one partial)
  int R = 0;         // output pixels per register block
  int64_t Wp = 0;    // W rounded up to whole blocks
  int64_t lo = 0;    // output column of a table row's first entry: pw - KW + 1
  int64_t RW = 0;    // entries (columns) per table row: Wp + KW - 1, zero outside [0, Wo)
  size_t idx_ints = 0;     // the index vectors: (KH * KW, CG, CV, L) int32
  size_t ring_floats = 0;  // one thread's scratch: KH ring rows and a zero row of RW * CG * L floats,
                           // and one column's g' (CG * G rounded up to L)
};

// isa Avx512 / Avx2 (std::invalid_argument otherwise).
SteInputPlan ste_input_plan(const SteInputProblem& p, Isa isa);

// idx[((tap * CG + cg) * CV + cv) * L + lane] = the G filter signs of input channel L cv + lane against
// output channels G cg + 0..G-1 at tap (bit j: +1 at G cg + j; 0 past Cout or Cin), for the taps
// [tap_begin, tap_end) of the KH * KW.
void ste_input_indices(const SteInputProblem& p, const SteInputPlan& plan, int32_t* idx, int64_t tap_begin,
                       int64_t tap_end);

// GX for the input rows (n * H + y) in [begin, end); ring: ring_floats floats, 64-byte aligned, this call's
// own. isa must be the plan's (std::invalid_argument otherwise).
void ste_input_rows(const SteInputProblem& p, const SteInputPlan& plan, const int32_t* idx, float* ring,
                    int64_t begin, int64_t end, Isa isa);

}  // namespace core
}  // namespace fastpose
