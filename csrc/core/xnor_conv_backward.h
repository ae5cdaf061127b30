// Straight-through backward of the XNOR convolution, torch-free parts (raw pointers, [begin, end) ranges).
//
// The forward saves, per input element, two bits instead of the float value (in the packed layout of
// xnor_conv.h, (N, H, W, CW) uint64 words, channel c at bit c % 64 of word c / 64, bits >= C zero):
//   sign bits: 1 where x >= 0 (as binarize_pack: -0.0 -> 1, NaN -> 0)
//   pass bits: 1 where |x| <= 1, the straight-through window of clamp(x, -1, 1) (NaN -> 0)
// which is all the backward reads of x: sign(x) for the weight gradient, the window for the input's.
#pragma once
#include <cstdint>

#include "core/dtypes.h"
#include "core/isa.h"
#include "core/xnor_conv.h"

namespace fastpose {
namespace core {

// Sign and pass bits of src rows [begin, end) of the N * H rows (n, h), in one read of x.
void ste_pack(const PackSource& src, uint64_t* sign, uint64_t* pass, int64_t begin, int64_t end, Isa isa);

// Float +-1 tensor from sign bits, for the weight gradient's GEMM: rows [begin, end) of the N * Hp rows of
// dst (N, C, Hp, Wp) with element strides (sn, sc, sh, sw), Hp = H + 2 ph, Wp = W + 2 pw; the border
// (ph / pw wide) is filled with `border` (-1 for pad_value = -1).
struct UnpackTarget {
  void* data;
  ElemType type;  // F32 or F64
  int64_t N, C, Hp, Wp;
  int64_t sn, sc, sh, sw;
  int64_t ph, pw;
  double border;
};
void sign_unpack(const uint64_t* sign, int64_t CW, const UnpackTarget& dst, int64_t begin, int64_t end, Isa isa);

// grad_x = pass ? g : 0, read from g at (n, c, h + oh, w + ow) (oh / ow crop a padded gradient), written to
// out (N, C, H, W); out may alias g when there is no crop. Rows [begin, end) of the N * H rows.
struct MaskProblem {
  const void* g;
  int64_t gsn, gsc, gsh, gsw, oh, ow;
  void* out;
  int64_t osn, osc, osh, osw;
  ElemType type;  // F32 or F64
  int64_t N, C, H, W, CW;
  const uint64_t* pass;
};
void ste_mask(const MaskProblem& p, int64_t begin, int64_t end, Isa isa);

// The STE chain through alpha = mean |w| (XNOR-Net) for output channels [begin, end): with G the gradient
// of the effective weight alpha * sign(w) and n = Cin * KH * KW,
//   gw = alpha * G + sgn(w) * sum(G * w) / n       (sgn(0) = 0, the derivative of |w| torch uses)
// scale = false: gw = G. G: (Cout, K) with element strides (gso, gsk) over the K = Cin * KH * KW taps in
// weight order (k = (ci * KH + kh) * KW + kw, given as the strides of those three); w contiguous, gw with
// element strides (oso, osc, osh, osw) (a channels_last weight's gradient is written in its own layout).
template <class T>
void ste_weight_chain(const T* G, int64_t gso, int64_t gsc, int64_t gsh, int64_t gsw, const T* w, const T* alpha,
                      int64_t Cin, int64_t KH, int64_t KW, T* gw, int64_t oso, int64_t osc, int64_t osh, int64_t osw,
                      int64_t begin, int64_t end);

}  // namespace core
}  // namespace fastpose
