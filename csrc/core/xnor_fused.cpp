// The fused XNOR-convolution epilogue (in-place channel-slice output, residual add, packed sign bits of
// the next layer's folded BatchNorm) and the BatchNorm-folded pack of a block's input, portable forms.
// Compiled for baseline x86-64 like xnor_conv.cpp: no FMA exists there, so every multiply and add
// below rounds on its own, which is what the exactness contract (xnor_conv.h) promises.
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/xnor_conv.h"

namespace fastpose {
namespace core {
namespace {

template <class A>
void fused_portable(const XnorConvProblem& p, int64_t n, int64_t oh, int64_t o0, int no, int64_t q0, int nq,
                    const int32_t* S, int64_t s_ostride, const int32_t* k0, const int32_t* extra) {
  const A* alpha = static_cast<const A*>(p.alpha);
  const A* bias = static_cast<const A*>(p.bias);
  const A* bns = static_cast<const A*>(p.bn_scale);
  const A* bnt = static_cast<const A*>(p.bn_shift);
  const A* ns = static_cast<const A*>(p.next_scale);
  const A* nt = static_cast<const A*>(p.next_shift);
  const A* res = static_cast<const A*>(p.residual);
  const A* up = static_cast<const A*>(p.up_residual);
  A* out = static_cast<A*>(p.out);
  int64_t os[4];
  out_strides_of(p, os);
  const int64_t* rs = p.res_strides;
  const int64_t* us = p.up_strides;
  const int64_t CWo = xnor_words(p.Cout);
  const int64_t o_end = o0 + no;
  if (!p.out_packed && os[1] != 1) {
    // Channel-major output (NCHW-like): channel outer, so consecutive stores are contiguous along W
    // instead of one page apart.
    for (int o = 0; o < no; ++o) {
      const int64_t oc = o0 + o;
      A* dst = out + n * os[0] + oc * os[1] + oh * os[2];
      const A* r = res ? res + n * rs[0] + oc * rs[1] + oh * rs[2] : nullptr;
      const A* u = up ? up + n * us[0] + oc * us[1] + (oh >> 1) * us[2] : nullptr;
      const int32_t* s = S + o * s_ostride;
      const int32_t* e = extra ? extra + o * s_ostride : nullptr;
      for (int q = 0; q < nq; ++q) {
        A v = static_cast<A>(k0[q] - 2 * s[q] - (e ? 2 * e[q] : 0));
        if (alpha) v = v * alpha[oc];
        if (bias) v = v + bias[oc];
        if (bns) {
          v = v * bns[oc];
          if (bnt) v = v + bnt[oc];
        }
        if (r) v = v + r[(q0 + q) * rs[3]];
        if (u) v = v + u[((q0 + q) >> 1) * us[3]];
        dst[(q0 + q) * os[3]] = v;
      }
    }
    return;
  }
  for (int q = 0; q < nq; ++q) {
    const int64_t ow = q0 + q;
    A* dst = out + n * os[0] + oh * os[2] + ow * os[3];
    const A* r = res ? res + n * rs[0] + oh * rs[2] + ow * rs[3] : nullptr;
    const A* u = up ? up + n * us[0] + (oh >> 1) * us[2] + (ow >> 1) * us[3] : nullptr;
    uint64_t* words = p.out_packed ? p.out_packed + ((n * p.Ho + oh) * p.Wo + ow) * CWo : nullptr;
    // Channels grouped by packed word, so each word is assembled in a register and stored once.
    for (int64_t wi = o0 >> 6; wi <= (o_end - 1) >> 6; ++wi) {
      const int64_t lo = std::max(o0, wi * 64), hi = std::min(o_end, wi * 64 + 64);
      uint64_t bits = 0;
      for (int64_t oc = lo; oc < hi; ++oc) {
        const int64_t o = oc - o0;
        const int32_t dot = k0[q] - 2 * S[o * s_ostride + q] - (extra ? 2 * extra[o * s_ostride + q] : 0);
        A v = static_cast<A>(dot);
        if (alpha) v = v * alpha[oc];
        if (bias) v = v + bias[oc];
        if (bns) {
          v = v * bns[oc];
          if (bnt) v = v + bnt[oc];
        }
        if (words) {
          A b = v;
          if (ns) {
            b = b * ns[oc];
            if (nt) b = b + nt[oc];
          }
          if (b >= A(0)) bits |= uint64_t(1) << (oc & 63);  // -0.0 -> +1, NaN -> -1, as binarize_pack
        }
        if (r) v = v + r[oc * rs[1]];
        if (u) v = v + u[oc * us[1]];
        dst[oc * os[1]] = v;
      }
      if (words) {
        // A block that covers only part of the word merges into it (one writer per word: see the header).
        const int64_t wlo = wi * 64, whi = std::min<int64_t>(p.Cout, wlo + 64);
        if (lo == wlo && hi == whi) {
          words[wi] = bits;
        } else {
          const uint64_t span = (hi - lo == 64 ? ~uint64_t(0) : ((uint64_t(1) << (hi - lo)) - 1)) << (lo & 63);
          words[wi] = (words[wi] & ~span) | bits;
        }
      }
    }
  }
}

template <class T>
void pack_affine_row_generic(const PackSource& s, const T* scale, const T* shift, int64_t n, int64_t h,
                             uint64_t* dst, int64_t CW) {
  std::memset(dst, 0, sizeof(uint64_t) * s.W * CW);
  const T* x = static_cast<const T*>(s.data) + n * s.sn + h * s.sh;
  for (int64_t c = 0; c < s.C; ++c) {
    const uint64_t bit = uint64_t(1) << (c & 63);
    uint64_t* d = dst + (c >> 6);
    const T a = scale[c], b = shift[c];
    const T* xc = x + c * s.sc;
    for (int64_t w = 0; w < s.W; ++w) {
      T u = xc[w * s.sw] * a;
      u = u + b;
      if (u >= T(0)) d[w * CW] |= bit;
    }
  }
}

}  // namespace

void xnor_fused_epilogue(const XnorConvProblem& p, int64_t n, int64_t oh, int64_t o0, int no, int64_t q0, int nq,
                         const int32_t* S, int64_t s_ostride, const int32_t* k0, const int32_t* extra) {
  if (no <= 0 || nq <= 0) return;
  if (p.fused_isa == Isa::Avx512 && xnor_fused_epilogue_avx512(p, n, oh, o0, no, q0, nq, S, s_ostride, k0, extra))
    return;
  if (p.fused_isa == Isa::Avx2 && xnor_fused_epilogue_avx2(p, n, oh, o0, no, q0, nq, S, s_ostride, k0, extra)) return;
  if (p.out_type == ElemType::F64)
    fused_portable<double>(p, n, oh, o0, no, q0, nq, S, s_ostride, k0, extra);
  else
    fused_portable<float>(p, n, oh, o0, no, q0, nq, S, s_ostride, k0, extra);
}

void binarize_pack_affine(const PackSource& s, const void* scale, const void* shift, uint64_t* dst, int64_t begin,
                          int64_t end, Isa isa) {
  binarize_pack_affine_rows(s, scale, shift, dst + begin * s.W * xnor_words(s.C), begin, end, isa);
}

void binarize_pack_affine_rows(const PackSource& s, const void* scale, const void* shift, uint64_t* d0,
                               int64_t begin, int64_t end, Isa isa) {
  const int64_t CW = xnor_words(s.C);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / s.H, h = r % s.H;
    uint64_t* d = d0 + (r - begin) * s.W * CW;
    if (s.type == ElemType::F64) {
      pack_affine_row_generic<double>(s, static_cast<const double*>(scale), static_cast<const double*>(shift), n, h,
                                      d, CW);
      continue;
    }
    const float* sc = static_cast<const float*>(scale);
    const float* sh = static_cast<const float*>(shift);
    if (isa == Isa::Avx512 && s.sc == 1) {
      pack_row_affine_nhwc_f32_avx512(static_cast<const float*>(s.data) + n * s.sn + h * s.sh, s.C, s.W, s.sw, sc,
                                      sh, d, CW);
      continue;
    }
    if (isa == Isa::Avx2 && s.sc == 1) {
      pack_row_affine_nhwc_f32_avx2(static_cast<const float*>(s.data) + n * s.sn + h * s.sh, s.C, s.W, s.sw, sc, sh,
                                    d, CW);
      continue;
    }
    if ((isa == Isa::Avx512 || isa == Isa::Avx2) && s.sw == 1) {
      // Pixels contiguous (NCHW): the folded values of the row into a scratch plane (C W floats, L1 / L2)
      // and the vector NCHW sign pack over it; element by element this was ~10x slower.
      thread_local std::vector<float> plane;
      if (plane.size() < static_cast<size_t>(s.C * s.W)) plane.resize(s.C * s.W);
      const float* src = static_cast<const float*>(s.data) + n * s.sn + h * s.sh;
      if (isa == Isa::Avx512) {
        affine_row_nchw_f32_avx512(src, s.C, s.W, s.sc, sc, sh, plane.data());
        pack_row_nchw_f32_avx512(plane.data(), s.C, s.W, s.W, d, CW, 1);
      } else {
        affine_row_nchw_f32_avx2(src, s.C, s.W, s.sc, sc, sh, plane.data());
        pack_row_nchw_f32_avx2(plane.data(), s.C, s.W, s.W, d, CW, 1);
      }
      continue;
    }
    pack_affine_row_generic<float>(s, sc, sh, n, h, d, CW);
  }
}

}  // namespace core
}  // namespace fastpose
