// What both GEMMs of the XNOR convolution's straight-through backward read: the geometry (stride 1,
// dilation 1) and the gradient of the output. The weight gradient's problem (xnor_ste_gemm.h) and the
// input gradient's (xnor_ste_input.h) extend it.
#pragma once
#include <cstdint>

namespace fastpose {
namespace core {

struct SteGrad {
  int64_t N, Cin, H, W, Cout, KH, KW, ph, pw, Ho, Wo;  // Ho = H + 2 ph - KH + 1, Wo likewise
  const float* g;                                      // (N, Cout, Ho, Wo), element strides below
  int64_t gsn, gsc, gsh, gsw;
};

}  // namespace core
}  // namespace fastpose
