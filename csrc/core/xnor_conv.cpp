// XNOR-popcount binary convolution: packing, the direct-convolution driver (valid-tap logic, border
// handling, epilogue) and the portable inner kernel. The AVX2 / AVX-512 inner kernels live in
// xnor_conv_avx2.cpp / xnor_conv_avx512.cpp; everything here is compiled for baseline x86-64, so the
// epilogue's multiply and add are never contracted into an FMA (the exactness contract of xnor_conv.h).
#include "core/xnor_conv.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace fastpose {
namespace core {
namespace {

inline int popc64(uint64_t v) {
  // SWAR popcount: baseline x86-64 has no POPCNT and __builtin_popcountll would call libgcc.
  v = v - ((v >> 1) & 0x5555555555555555ull);
  v = (v & 0x3333333333333333ull) + ((v >> 2) & 0x3333333333333333ull);
  v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0full;
  return static_cast<int>((v * 0x0101010101010101ull) >> 56);
}

// x >= 0 on the raw bits (-0.0 is >= 0; NaN is not): the value is a non-negative non-NaN, or -0.
template <class U>
inline bool nonneg_bits(U u, U posinf, U signbit) {
  return u <= posinf || u == signbit;
}

inline bool nonneg_at(const void* base, ElemType t, int64_t i) {
  switch (t) {
    case ElemType::F32: {
      uint32_t u;
      std::memcpy(&u, static_cast<const char*>(base) + 4 * i, 4);
      return nonneg_bits<uint32_t>(u, 0x7f800000u, 0x80000000u);
    }
    case ElemType::F64: {
      uint64_t u;
      std::memcpy(&u, static_cast<const char*>(base) + 8 * i, 8);
      return nonneg_bits<uint64_t>(u, 0x7ff0000000000000ull, 0x8000000000000000ull);
    }
    case ElemType::F16: {
      uint16_t u;
      std::memcpy(&u, static_cast<const char*>(base) + 2 * i, 2);
      return nonneg_bits<uint16_t>(u, 0x7c00u, 0x8000u);
    }
    case ElemType::BF16: {
      uint16_t u;
      std::memcpy(&u, static_cast<const char*>(base) + 2 * i, 2);
      return nonneg_bits<uint16_t>(u, 0x7f80u, 0x8000u);
    }
  }
  return false;
}

void pack_row_generic(const PackSource& s, int64_t n, int64_t h, uint64_t* dst, int64_t CW) {
  std::memset(dst, 0, sizeof(uint64_t) * s.W * CW);
  const int64_t base = n * s.sn + h * s.sh;
  for (int64_t c = 0; c < s.C; ++c) {
    const uint64_t bit = uint64_t(1) << (c & 63);
    uint64_t* d = dst + (c >> 6);
    const int64_t cb = base + c * s.sc;
    for (int64_t w = 0; w < s.W; ++w)
      if (nonneg_at(s.data, s.type, cb + w * s.sw)) d[w * CW] |= bit;
  }
}

void popcount_block_portable(const uint64_t* x, int64_t xstride, int npix, const uint64_t* w, int64_t wstride,
                             int nout, const int64_t* xoff, const int64_t* woff, int nseg, int64_t L,
                             int32_t* dots, int64_t dots_ostride) {
  for (int o = 0; o < nout; ++o)
    for (int q = 0; q < npix; ++q) {
      int32_t s = 0;
      for (int g = 0; g < nseg; ++g) {
        const uint64_t* a = x + q * xstride + xoff[g];
        const uint64_t* b = w + o * wstride + woff[g];
        for (int64_t i = 0; i < L; ++i) s += popc64(a[i] ^ b[i]);
      }
      dots[o * dots_ostride + q] = s;
    }
}

template <class A>
inline void store_out(void* out, ElemType t, int64_t i, A v) {
  switch (t) {
    case ElemType::F32:
      static_cast<float*>(out)[i] = static_cast<float>(v);
      break;
    case ElemType::F64:
      static_cast<double*>(out)[i] = static_cast<double>(v);
      break;
    case ElemType::F16:
      static_cast<uint16_t*>(out)[i] = float_to_half(static_cast<float>(v));
      break;
    case ElemType::BF16:
      static_cast<uint16_t*>(out)[i] = float_to_bf16(static_cast<float>(v));
      break;
  }
}

// dot (int) -> out element for output channels [o0, o0 + no) of pixels [q0, q0 + nq) of row (n, oh).
// dot = k0[q] - 2 * S[o][q] - 2 * extra[o][q] (extra: pad_value = -1 border popcounts, may be null).
template <class A>
void epilogue(const XnorConvProblem& p, int64_t n, int64_t oh, int64_t o0, int no, int64_t q0, int nq,
              const int32_t* S, int64_t s_ostride, const int32_t* k0, const int32_t* extra) {
  const A* alpha = static_cast<const A*>(p.alpha);
  const A* bias = static_cast<const A*>(p.bias);
  const A* bns = static_cast<const A*>(p.bn_scale);
  const A* bnt = static_cast<const A*>(p.bn_shift);
  if (p.out_strided || p.residual || p.out_packed) {
    xnor_fused_epilogue(p, n, oh, o0, no, q0, nq, S, s_ostride, k0, extra);
    return;
  }
  if (!p.out_nhwc && !extra && !bns && p.out_type == (sizeof(A) == 8 ? ElemType::F64 : ElemType::F32)) {
    // The common case, in loops that vectorise; the multiply and the add still round separately.
    for (int o = 0; o < no; ++o) {
      A* dst = static_cast<A*>(p.out) + ((n * p.Cout + o0 + o) * p.Ho + oh) * p.Wo + q0;
      const int32_t* s = S + o * s_ostride;
      const A a = alpha ? alpha[o0 + o] : A(1), b = bias ? bias[o0 + o] : A(0);
      if (alpha && bias) {
        for (int q = 0; q < nq; ++q) {
          A v = static_cast<A>(k0[q] - 2 * s[q]) * a;
          dst[q] = v + b;
        }
      } else if (alpha) {
        for (int q = 0; q < nq; ++q) dst[q] = static_cast<A>(k0[q] - 2 * s[q]) * a;
      } else if (bias) {
        for (int q = 0; q < nq; ++q) dst[q] = static_cast<A>(k0[q] - 2 * s[q]) + b;
      } else {
        for (int q = 0; q < nq; ++q) dst[q] = static_cast<A>(k0[q] - 2 * s[q]);
      }
    }
    return;
  }
  for (int q = 0; q < nq; ++q)
    for (int o = 0; o < no; ++o) {
      const int32_t dot = k0[q] - 2 * S[o * s_ostride + q] - (extra ? 2 * extra[o * s_ostride + q] : 0);
      A v = static_cast<A>(dot);
      if (alpha) v = v * alpha[o0 + o];
      if (bias) v = v + bias[o0 + o];
      if (bns) {
        v = v * bns[o0 + o];
        if (bnt) v = v + bnt[o0 + o];
      }
      const int64_t idx = p.out_nhwc ? ((n * p.Ho + oh) * p.Wo + q0 + q) * p.Cout + o0 + o
                                     : ((n * p.Cout + o0 + o) * p.Ho + oh) * p.Wo + q0 + q;
      store_out(p.out, p.out_type, idx, v);
    }
}

}  // namespace

void binarize_pack(const PackSource& s, uint64_t* dst, int64_t begin, int64_t end, Isa isa) {
  const int64_t CW = xnor_words(s.C);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / s.H, h = r % s.H;
    uint64_t* d = dst + r * s.W * CW;
    if (isa != Isa::Portable && s.type == ElemType::F32) {
      const float* src = static_cast<const float*>(s.data) + n * s.sn + h * s.sh;
      if (s.sw == 1) {
        pack_row_nchw_f32_avx2(src, s.C, s.W, s.sc, d, CW);
        continue;
      }
      if (s.sc == 1) {
        pack_row_nhwc_f32_avx2(src, s.C, s.W, s.sw, d, CW);
        continue;
      }
    }
    pack_row_generic(s, n, h, d, CW);
  }
}

void xnor_weight_popcounts(const uint64_t* w, int64_t taps_total, int64_t CW, int32_t* out) {
  for (int64_t t = 0; t < taps_total; ++t) {
    int32_t s = 0;
    for (int64_t i = 0; i < CW; ++i) s += popc64(w[t * CW + i]);
    out[t] = s;
  }
}

void xnor_popcount_block(const uint64_t* x, int64_t xstride, int npix, const uint64_t* w, int64_t wstride,
                         int nout, const int64_t* xoff, const int64_t* woff, int nseg, int64_t L,
                         int32_t* dots, int64_t dots_ostride, Isa isa) {
  if (npix <= 0 || nout <= 0) return;
  if (nseg == 0 || L == 0) {
    for (int o = 0; o < nout; ++o)
      for (int q = 0; q < npix; ++q) dots[o * dots_ostride + q] = 0;
    return;
  }
  switch (isa) {
    case Isa::Avx512:
      xnor_popcount_block_avx512(x, xstride, npix, w, wstride, nout, xoff, woff, nseg, L, dots, dots_ostride);
      return;
    case Isa::Avx2:
      xnor_popcount_block_avx2(x, xstride, npix, w, wstride, nout, xoff, woff, nseg, L, dots, dots_ostride);
      return;
    case Isa::Portable:
      break;
  }
  popcount_block_portable(x, xstride, npix, w, wstride, nout, xoff, woff, nseg, L, dots, dots_ostride);
}

int64_t xnor_conv_units(const XnorConvProblem& p) {
  const int64_t cb = std::max<int64_t>(1, p.cout_block);
  return p.N * p.Ho * ((p.Cout + cb - 1) / cb);
}

void xnor_conv2d_forward(const XnorConvProblem& p, int64_t begin, int64_t end, Isa isa) {
  const int64_t cb = std::max<int64_t>(1, p.cout_block);
  const int64_t nob = (p.Cout + cb - 1) / cb;
  const int64_t CW = p.CW, KT = p.KH * p.KW;
  const bool pad_m1 = p.pad_value != 0;
  const bool dbl = p.out_type == ElemType::F64;
  // Interior columns: every horizontal tap inside the image.
  int64_t c_lo = (p.pw + p.sw - 1) / p.sw;
  const int64_t num = p.W - 1 + p.pw - (p.KW - 1) * p.dw;
  int64_t c_hi = num < 0 ? 0 : num / p.sw + 1;
  c_lo = std::min(c_lo, p.Wo);
  c_hi = std::max(c_lo, std::min(c_hi, p.Wo));

  std::vector<int32_t> S(cb * p.Wo), k0(p.Wo), extra;
  if (pad_m1) extra.assign(cb * p.Wo, 0);
  std::vector<int64_t> xoff(KT), woff(KT);
  std::vector<int> vi(p.KH);
  std::vector<char> tap_ok(KT);

  for (int64_t u = begin; u < end; ++u) {
    const int64_t ob = u % nob, row = u / nob;
    const int64_t n = row / p.Ho, oh = row % p.Ho;
    const int64_t o0 = ob * cb;
    const int no = static_cast<int>(std::min(cb, p.Cout - o0));
    const uint64_t* xn = p.x + n * p.H * p.W * CW;
    const uint64_t* wo = p.w + o0 * KT * CW;
    int nvi = 0;
    for (int64_t i = 0; i < p.KH; ++i) {
      const int64_t ih = oh * p.sh - p.ph + i * p.dh;
      if (ih >= 0 && ih < p.H) vi[nvi++] = static_cast<int>(i);
    }
    const auto ihof = [&](int64_t i) { return oh * p.sh - p.ph + i * p.dh; };

    // Interior pixels [c_lo, c_hi): the same tap list for all of them.
    if (c_hi > c_lo) {
      int nseg = 0;
      int64_t L;
      if (p.dw == 1) {
        L = p.KW * CW;
        for (int k = 0; k < nvi; ++k) {
          xoff[nseg] = ihof(vi[k]) * p.W * CW;
          woff[nseg] = vi[k] * p.KW * CW;
          ++nseg;
        }
      } else {
        L = CW;
        for (int k = 0; k < nvi; ++k)
          for (int64_t j = 0; j < p.KW; ++j) {
            xoff[nseg] = (ihof(vi[k]) * p.W + j * p.dw) * CW;
            woff[nseg] = (vi[k] * p.KW + j) * CW;
            ++nseg;
          }
      }
      const uint64_t* xb = xn + (c_lo * p.sw - p.pw) * CW;
      xnor_popcount_block(xb, p.sw * CW, static_cast<int>(c_hi - c_lo), wo, KT * CW, no, xoff.data(), woff.data(),
                          nseg, L, S.data() + c_lo, p.Wo, isa);
      const int32_t kv = static_cast<int32_t>((pad_m1 ? KT : nvi * p.KW) * p.Cin);
      for (int64_t q = c_lo; q < c_hi; ++q) k0[q] = kv;
      if (pad_m1) {
        for (int64_t t = 0; t < KT; ++t) tap_ok[t] = 0;
        for (int k = 0; k < nvi; ++k)
          for (int64_t j = 0; j < p.KW; ++j) tap_ok[vi[k] * p.KW + j] = 1;
        for (int o = 0; o < no; ++o) {
          int32_t e = 0;
          for (int64_t t = 0; t < KT; ++t)
            if (!tap_ok[t]) e += p.wpop[(o0 + o) * KT + t];
          for (int64_t q = c_lo; q < c_hi; ++q) extra[o * p.Wo + q] = e;
        }
      }
    }
    // Border pixels: one at a time, with their own valid taps.
    for (int64_t ow = 0; ow < p.Wo; ++ow) {
      if (ow == c_lo && c_hi > c_lo) ow = c_hi;
      if (ow >= p.Wo) break;
      const int64_t iw0 = ow * p.sw - p.pw;
      int64_t j_lo = 0, j_hi = 0;  // valid j: iw0 + j * dw in [0, W)
      {
        int64_t a = iw0 >= 0 ? 0 : (-iw0 + p.dw - 1) / p.dw;
        int64_t b = (p.W - 1 - iw0) < 0 ? -1 : (p.W - 1 - iw0) / p.dw;
        j_lo = std::min(a, p.KW);
        j_hi = std::max(j_lo, std::min(b + 1, p.KW));
      }
      int nseg = 0;
      int64_t L;
      if (p.dw == 1) {
        L = (j_hi - j_lo) * CW;
        for (int k = 0; k < nvi && L > 0; ++k) {
          xoff[nseg] = (ihof(vi[k]) * p.W + iw0 + j_lo) * CW;
          woff[nseg] = (vi[k] * p.KW + j_lo) * CW;
          ++nseg;
        }
      } else {
        L = CW;
        for (int k = 0; k < nvi; ++k)
          for (int64_t j = j_lo; j < j_hi; ++j) {
            xoff[nseg] = (ihof(vi[k]) * p.W + iw0 + j * p.dw) * CW;
            woff[nseg] = (vi[k] * p.KW + j) * CW;
            ++nseg;
          }
      }
      // Column stride p.Wo: S holds the whole row, pixel ow at column ow.
      xnor_popcount_block(xn, 0, 1, wo, KT * CW, no, xoff.data(), woff.data(), nseg, L, S.data() + ow, p.Wo, isa);
      k0[ow] = static_cast<int32_t>((pad_m1 ? KT : nvi * (j_hi - j_lo)) * p.Cin);
      if (pad_m1) {
        for (int64_t t = 0; t < KT; ++t) tap_ok[t] = 0;
        for (int k = 0; k < nvi; ++k)
          for (int64_t j = j_lo; j < j_hi; ++j) tap_ok[vi[k] * p.KW + j] = 1;
        for (int o = 0; o < no; ++o) {
          int32_t e = 0;
          for (int64_t t = 0; t < KT; ++t)
            if (!tap_ok[t]) e += p.wpop[(o0 + o) * KT + t];
          extra[o * p.Wo + ow] = e;
        }
      }
    }
    if (dbl)
      epilogue<double>(p, n, oh, o0, no, 0, static_cast<int>(p.Wo), S.data(), p.Wo, k0.data(),
                       pad_m1 ? extra.data() : nullptr);
    else
      epilogue<float>(p, n, oh, o0, no, 0, static_cast<int>(p.Wo), S.data(), p.Wo, k0.data(),
                      pad_m1 ? extra.data() : nullptr);
  }
}

}  // namespace core
}  // namespace fastpose
