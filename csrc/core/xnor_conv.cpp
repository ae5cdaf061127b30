// XNOR-popcount binary convolution: packing, the input preparation (the kernels' pixels-as-lanes
// layout, xnor_conv.h), the driver (per output row: the popcount GEMM over the valid taps, border and
// pad_value corrections from the weight tap popcounts, epilogue) and the portable inner kernel. The AVX2 / AVX-512 inner kernels live in
// xnor_conv_avx2.cpp / xnor_conv_avx512.cpp; everything here is compiled for baseline x86-64, so the
// epilogue's multiply and add are never contracted into an FMA (the exactness contract of xnor_conv.h).
#include "core/xnor_conv.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

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

void gemm_portable(const uint64_t* x, const int64_t* xoff, int nk, const uint64_t* w, int64_t wstride,
                   const int64_t* woff, int nout, int npix, int32_t* S, int64_t ss) {
  for (int o = 0; o < nout; ++o) {
    int32_t* s = S + o * ss;
    for (int q = 0; q < npix; ++q) s[q] = 0;
    const uint64_t* wo = w + o * wstride;
    for (int k = 0; k < nk; ++k) {
      const uint64_t* xk = x + xoff[k];
      const uint64_t wv = wo[woff[k]];
      for (int q = 0; q < npix; ++q) s[q] += popc64(xk[q] ^ wv);
    }
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
  // The loops below are compiled for baseline x86-64 (4 lanes); the SIMD forms compute the same values.
  if (no > 0 && nq > 0 &&
      ((p.fused_isa == Isa::Avx512 && xnor_fused_epilogue_avx512(p, n, oh, o0, no, q0, nq, S, s_ostride, k0, extra)) ||
       (p.fused_isa == Isa::Avx2 && xnor_fused_epilogue_avx2(p, n, oh, o0, no, q0, nq, S, s_ostride, k0, extra))))
    return;
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

// float32 rows with a unit stride along W or C through the ISA kernels; false if none applies.
bool pack_row_fast(const PackSource& s, int64_t n, int64_t h, uint64_t* d, int64_t ps, int64_t ks, Isa isa) {
  if (isa == Isa::Portable || s.type != ElemType::F32) return false;
  const float* src = static_cast<const float*>(s.data) + n * s.sn + h * s.sh;
  const bool avx512 = isa == Isa::Avx512;
  if (s.sw == 1) {
    (avx512 ? pack_row_nchw_f32_avx512 : pack_row_nchw_f32_avx2)(src, s.C, s.W, s.sc, d, ps, ks);
    return true;
  }
  if (s.sc == 1) {
    (avx512 ? pack_row_nhwc_f32_avx512 : pack_row_nhwc_f32_avx2)(src, s.C, s.W, s.sw, d, ps, ks);
    return true;
  }
  return false;
}

// Rows [begin, end) of the N * H rows, row r at d0 + (r - begin) * W * CW. Rows of one image that
// follow each other in memory (NCHW with dense planes) are packed as one long row of up to ~1024
// pixels: each channel then streams 4 KB contiguous instead of one short row, which keeps the
// prefetchers ahead when x comes from DRAM.
void pack_rows(const PackSource& s, int64_t begin, int64_t end, uint64_t* d0, Isa isa) {
  const int64_t CW = xnor_words(s.C);
  const bool dense_nchw = s.sw == 1 && s.sh == s.W && s.type == ElemType::F32 && isa != Isa::Portable;
  const int64_t run = dense_nchw ? std::max<int64_t>(1, 1024 / std::max<int64_t>(1, s.W)) : 1;
  for (int64_t r = begin; r < end;) {
    const int64_t n = r / s.H, h = r % s.H;
    const int64_t nr = std::min({run, end - r, s.H - h});
    uint64_t* d = d0 + (r - begin) * s.W * CW;
    PackSource sl = s;
    sl.W = nr * s.W;  // rows h .. h + nr - 1 as one row (sh == W, sw == 1)
    if (!pack_row_fast(nr > 1 ? sl : s, n, h, d, CW, 1, isa)) pack_row_generic(s, n, h, d, CW);
    r += nr;
  }
}

}  // namespace

void binarize_pack(const PackSource& s, uint64_t* dst, int64_t begin, int64_t end, Isa isa) {
  pack_rows(s, begin, end, dst + begin * s.W * xnor_words(s.C), isa);
}

bool fast_pext() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool fast = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
    // "AuthenticAMD" / "HygonGenuine" (a Zen 1 licence) before family 19h (Zen 3) run pext in microcode.
    const bool amd_like = (b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163) ||
                          (b == 0x6f677948 && d == 0x6e65476e && c == 0x656e6975);
    if (!amd_like) return true;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const unsigned base = (a >> 8) & 0xf, family = base == 0xf ? base + ((a >> 20) & 0xff) : base;
    return family >= 0x19;
  }();
  return fast;
#else
  return false;
#endif
}

bool pack_weight_abs_f32_available(int64_t K, Isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (K < 1 || K > kPackWeightMaxTaps || !__builtin_cpu_supports("bmi2")) return false;
  // Every AVX-512 CPU has a fast pext; the AVX2 form needs one (else binarize_pack and ATen's mean).
  return isa == Isa::Avx512 || (isa == Isa::Avx2 && fast_pext());
#else
  (void)K, (void)isa;
  return false;
#endif
}

void pack_weight_abs_f32(const float* w, int64_t Cin, int64_t K, uint64_t* dst, float* abs_sum, int sum_lanes,
                         int64_t co_begin, int64_t co_end, int32_t* tap_pop, Isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa == Isa::Avx2)
    pack_weight_abs_f32_avx2(w, Cin, K, dst, abs_sum, sum_lanes, co_begin, co_end, tap_pop);
  else
    pack_weight_abs_f32_avx512(w, Cin, K, dst, abs_sum, sum_lanes, co_begin, co_end, tap_pop);
#else
  (void)w, (void)Cin, (void)K, (void)dst, (void)abs_sum, (void)sum_lanes, (void)co_begin, (void)co_end,
      (void)tap_pop, (void)isa;
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
// The POPCNT instruction (every AVX2 / AVX-512 CPU has it): ~12x fewer instructions than the SWAR form,
// which matters for small layers, where the weight's tap popcounts are a fixed cost of every call.
__attribute__((target("popcnt"))) static void weight_popcounts_hw(const uint64_t* w, int64_t taps_total, int64_t CW,
                                                                   int32_t* out) {
  for (int64_t t = 0; t < taps_total; ++t) {
    int32_t s = 0;
    for (int64_t i = 0; i < CW; ++i) s += __builtin_popcountll(w[t * CW + i]);
    out[t] = s;
  }
}
#endif

void xnor_weight_popcounts(const uint64_t* w, int64_t taps_total, int64_t CW, int32_t* out) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (active_isa() == Isa::Avx512) {
    xnor_weight_popcounts_avx512(w, taps_total, CW, out);
    return;
  }
  if (detected_isa() != Isa::Portable) {
    weight_popcounts_hw(w, taps_total, CW, out);
    return;
  }
#endif
  for (int64_t t = 0; t < taps_total; ++t) {
    int32_t s = 0;
    for (int64_t i = 0; i < CW; ++i) s += popc64(w[t * CW + i]);
    out[t] = s;
  }
}

void xnor_gemm_block(const uint64_t* x, const int64_t* xoff, int nk, const uint64_t* w, int64_t wstride,
                     const int64_t* woff, int nout, int npix, int32_t* S, int64_t s_ostride, Isa isa,
                     const uint16_t* avx2_tables, int64_t tables_ostride) {
  if (npix <= 0 || nout <= 0) return;
  if (nk <= 0) {
    for (int o = 0; o < nout; ++o)
      for (int q = 0; q < npix; ++q) S[o * s_ostride + q] = 0;
    return;
  }
  switch (isa) {
    case Isa::Avx512:
      xnor_gemm_block_avx512(x, xoff, nk, w, wstride, woff, nout, npix, S, s_ostride);
      return;
    case Isa::Avx2:
      xnor_gemm_block_avx2(x, xoff, nk, w, wstride, woff, nout, npix, S, s_ostride, avx2_tables, tables_ostride);
      return;
    case Isa::Portable:
      break;
  }
  gemm_portable(x, xoff, nk, w, wstride, woff, nout, npix, S, s_ostride);
}

int64_t xnor_popcount_peak_loop(int64_t iters, Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return xnor_popcount_peak_avx512(iters);
    case Isa::Avx2:
      return xnor_popcount_peak_avx2(iters);
    case Isa::Portable:
      break;
  }
  // 8 independent chains; volatile seeds keep the compiler from folding the loop.
  volatile uint64_t seed = 0x9e3779b97f4a7c15ull;
  uint64_t v[8], acc[8];
  for (int i = 0; i < 8; ++i) v[i] = seed * (i + 1), acc[i] = 0;
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 8; ++i) {
      acc[i] += popc64(v[i] ^ acc[i]);
    }
  volatile uint64_t sink = 0;
  for (int i = 0; i < 8; ++i) sink = sink + acc[i];
  return iters * 8 * 64;
}

namespace {

// One prepared row (see xnor_conv.h) from the packed row xrow (W, CW).
void prepare_row(const XnorConvProblem& p, const uint64_t* xrow, uint64_t* dst) {
  const int64_t Wq = xnor_conv_xt_plane(p), CW = p.CW, sw = p.sw;
  std::memset(dst, 0, sizeof(uint64_t) * xnor_conv_xt_row_words(p));
  for (int64_t iw = 0; iw < p.W; ++iw) {
    const int64_t u = iw + p.pw, r = u % sw, t = u / sw;
    if (t >= Wq) break;  // columns no output reads
    const uint64_t* src = xrow + iw * CW;
    uint64_t* d = dst + r * Wq + t;
    for (int64_t c = 0; c < CW; ++c) d[c * sw * Wq] = src[c];
  }
}

}  // namespace

void xnor_conv_prepare_input(const XnorConvProblem& p, uint64_t* xt, int64_t begin, int64_t end) {
  const int64_t RS = xnor_conv_xt_row_words(p);
  for (int64_t r = begin; r < end; ++r) prepare_row(p, p.x + r * p.W * p.CW, xt + r * RS);
}

void xnor_conv_prepare_input_from(const XnorConvProblem& p, const PackSource& src, uint64_t* xt, int64_t begin,
                                  int64_t end, Isa isa) {
  // Packed in blocks of rows (pack_rows: long channel streams) into a small buffer, then laid out row
  // by row; the second pass touches 1/32 of the bytes of the first (float32).
  const int64_t RS = xnor_conv_xt_row_words(p);
  const int64_t kBlock = std::min<int64_t>(std::max<int64_t>(1, end - begin),
                                          std::max<int64_t>(1, 32768 / std::max<int64_t>(1, p.W * p.CW)));
  // (<= 256 KB or 1 row, and no more rows than the range: the vector is zero-filled)
  std::vector<uint64_t> tmp(kBlock * p.W * p.CW);
  for (int64_t r0 = begin; r0 < end; r0 += kBlock) {
    const int64_t r1 = std::min(end, r0 + kBlock);
    pack_rows(src, r0, r1, tmp.data(), isa);
    for (int64_t r = r0; r < r1; ++r) prepare_row(p, tmp.data() + (r - r0) * p.W * p.CW, xt + r * RS);
  }
}

namespace {
// row_pairs: the parity of the top border rows (output rows with a vertical tap above the image).
int64_t pair_shift(const XnorConvProblem& p) { return std::min(p.Ho, (p.ph + p.sh - 1) / p.sh) % 2; }
}  // namespace

bool xnor_conv_row_pairs_fit(const XnorConvProblem& p, Isa isa) {
  // (more than 16 columns already fill 32-pixel blocks. 8-column rows pair only from a prepared input:
  // through the fused op's rings the mirrored copies cost the small layers more than the pairs gained.)
  const int64_t wop = xnor_conv_wo_pad(p);
  return isa == Isa::Avx2 && !p.pool && (wop == 16 || (wop == 8 && p.xt != nullptr)) && p.Ho >= 2;
}

int64_t xnor_conv_units(const XnorConvProblem& p) {
  const int64_t cb = std::max<int64_t>(1, p.cout_block);
  const int64_t rows = p.pool ? (p.Ho + 1) / 2 : p.row_pairs ? (p.Ho + pair_shift(p) + 1) / 2 : p.Ho;
  return p.N * rows * ((p.Cout + cb - 1) / cb);
}

namespace {

// avg_pool2d(2, 2) of two scratch rows (XnorConvProblem::pool) into out row ph, channels [o0, o0 + no):
// ATen's order and rounding ((((0 + a) + b) + c) + d) / 4; the 0 + keeps a -0.0 sum at +0.0 as ATen does.
template <class A>
void pool_rows(const XnorConvProblem& p, const A* s, int64_t n, int64_t ph, int64_t o0, int no) {
  const int64_t C = p.Cout, Wp = p.Wo / 2;
  const int64_t* os = p.out_strides;  // pool needs out_strided (the fused op's form; checked by the caller)
  const A* s1 = s + p.Wo * C;
  for (int64_t pw = 0; pw < Wp; ++pw) {
    const A* a = s + 2 * pw * C + o0;
    const A* c = s1 + 2 * pw * C + o0;
    A* dst = static_cast<A*>(p.out) + n * os[0] + ph * os[2] + pw * os[3] + o0 * os[1];
    if (os[1] == 1) {
      for (int o = 0; o < no; ++o) {
        A v = A(0) + a[o];
        v = v + a[C + o];
        v = v + c[o];
        v = v + c[C + o];
        dst[o] = v / A(4);
      }
    } else {
      for (int o = 0; o < no; ++o) {
        A v = A(0) + a[o];
        v = v + a[C + o];
        v = v + c[o];
        v = v + c[C + o];
        dst[o * os[1]] = v / A(4);
      }
    }
  }
}

}  // namespace

// Per unit (n, oh, o0..o0+no): the popcount GEMM of the prepared rows over the vertically valid taps,
// S[o][q] = sum popc(x ^ w), where horizontally out-of-image taps read zero bits (= -1 values), then
//   pad_value = -1: the vertically invalid taps, which also read -1, add their weight popcounts;
//   pad_value =  0: border pixels subtract the weight popcounts of their out-of-image taps and count
//                   only their valid taps in k0,
// so that dot = k0 - 2 S exactly; the epilogue never sees the border logic.
void xnor_conv2d_forward(const XnorConvProblem& p, int64_t begin, int64_t end, Isa isa) {
  SingleRange r{begin, end};
  xnor_conv2d_forward_ranges(p, single_range, &r, isa);
}

void xnor_conv2d_forward_ranges(const XnorConvProblem& p, RangeSource next, void* ctx, Isa isa) {
  int64_t begin = 0, end = 0;
  if (!next(ctx, &begin, &end)) return;
  const int64_t cb = std::max<int64_t>(1, p.cout_block);
  const int64_t nob = (p.Cout + cb - 1) / cb;
  const int64_t CW = p.CW, KT = p.KH * p.KW;
  const bool pad_m1 = p.pad_value != 0;
  const bool dbl = p.out_type == ElemType::F64;
  const int64_t Wop = xnor_conv_wo_pad(p), Wq = xnor_conv_xt_plane(p), RS = xnor_conv_xt_row_words(p);
  // Interior columns: every horizontal tap inside the image.
  int64_t c_lo = (p.pw + p.sw - 1) / p.sw;
  const int64_t num = p.W - 1 + p.pw - (p.KW - 1) * p.dw;
  int64_t c_hi = num < 0 ? 0 : num / p.sw + 1;
  c_lo = std::min(c_lo, p.Wo);
  c_hi = std::max(c_lo, std::min(c_hi, p.Wo));

  // S rows: one output row's sums, or two (row_pairs: the second row's at + Wop, Wop == 16 or 8).
  const int64_t Sst = p.row_pairs ? 2 * Wop : Wop;
  std::vector<int32_t> S(cb * Sst), k0(Wop);
  // AVX2: the weight's table offsets, per channel block on first use by this thread (<= 4 MB of them).
  std::vector<uint16_t> wtab;
  std::vector<char> wtab_ready;
  if (isa == Isa::Avx2 && p.Cout * KT * CW * 8 <= (int64_t(2) << 20)) {
    wtab.resize(p.Cout * KT * CW * 8);
    wtab_ready.assign(nob, 0);
  }
  // Border columns (some horizontal tap outside the image) and their count of valid horizontal taps.
  std::vector<int64_t> border, border_taps;
  const auto tap_inside = [&](int64_t ow, int64_t j) {
    const int64_t iw = ow * p.sw - p.pw + j * p.dw;
    return iw >= 0 && iw < p.W;
  };
  for (int64_t ow = 0; ow < p.Wo; ++ow) {
    if (ow >= c_lo && ow < c_hi) continue;
    int64_t taps = 0;
    for (int64_t j = 0; j < p.KW; ++j) taps += tap_inside(ow, j);
    border.push_back(ow);
    border_taps.push_back(taps);
  }
  // Per valid-row set (nvi, first valid row; a 3x3 layer has three: top row, interior, bottom row), the
  // popcount of the out-of-image taps of every border column and output channel: what zero padding
  // takes off that column's sums. Built on first use and kept for the thread's later units (a scalar
  // pass over the taps per unit and channel dominated small layers).
  struct EdgeTable {
    int64_t nvi, first;
    std::vector<int32_t> edge;  // (border column, Cout)
  };
  std::vector<EdgeTable> edges;
  std::vector<int64_t> xoff(KT * CW), woff(KT * CW);
  std::vector<int> vi(p.KH);
  std::vector<int32_t> wpop_own;
  const int32_t* wpop = p.wpop;
  if (!wpop) {
    wpop_own.resize(p.Cout * KT);
    xnor_weight_popcounts(p.w, p.Cout * KT, CW, wpop_own.data());
    wpop = wpop_own.data();
  }
  // Without a prepared input: a ring of prepared rows, input row ih of image n in slot ih % R (the rows
  // one output row reads span R, so they never share a slot), tagged with n * H + ih.
  // Row pairs read R + sh rows; there the ring has R + sh slots and every row is stored twice, in slot
  // s and s + (R + sh), so the rows of a window are consecutive slots from the window's first: two rows'
  // taps then sit a fixed sh rows apart, as the paired kernel needs.
  const int64_t R = (p.KH - 1) * p.dh + 1;
  const bool mirror = p.row_pairs && !p.xt;
  const int64_t Rr = mirror ? R + p.sh : R;
  const auto slot = [Rr](int64_t ih) { return ((ih % Rr) + Rr) % Rr; };
  std::vector<uint64_t> rows, packed_row;
  std::vector<int64_t> tags;
  if (!p.xt) {
    rows.resize((mirror ? 2 : 1) * Rr * RS);
    tags.assign(Rr, -1);
    if (!p.x) packed_row.resize(p.W * CW);
  }

  // Pooled: each row's elements go to a two-row scratch instead (element (o, ow) of row r at
  // r * Wo * Cout + ow * Cout + o: n and oh drop out of its strides), which is then pooled into out.
  std::vector<double> scratch;
  XnorConvProblem rows_p[2] = {p, p};
  if (p.pool && !p.out_strided) return;  // (a contract violation: pool_rows addresses out by out_strides)
  if (p.pool) {
    scratch.resize(2 * p.Wo * p.Cout);
    for (int r = 0; r < 2; ++r) {
      XnorConvProblem& q = rows_p[r];
      q.pool = false;
      q.stream_out = false;
      q.out_strided = true;
      q.out = dbl ? static_cast<void*>(scratch.data() + r * p.Wo * p.Cout)
                  : static_cast<void*>(reinterpret_cast<float*>(scratch.data()) + r * p.Wo * p.Cout);
      q.out_strides[0] = 0, q.out_strides[1] = 1, q.out_strides[2] = 0, q.out_strides[3] = p.Cout;
    }
  }

  // One output row's channels [ob * cb, + cb): sums, border corrections, then the epilogue into pe's out.
  // nrows = 2: rows oh and oh + 1 at once (row_pairs), which the caller checked read the same vertical taps.
  const auto one_row = [&](int64_t n, int64_t oh, int64_t ob, const XnorConvProblem& pe, int nrows = 1) {
    const int64_t o0 = ob * cb;
    const int no = static_cast<int>(std::min(cb, p.Cout - o0));
    int nvi = 0;
    for (int64_t i = 0; i < p.KH; ++i) {
      const int64_t ih = oh * p.sh - p.ph + i * p.dh;
      if (ih >= 0 && ih < p.H) vi[nvi++] = static_cast<int>(i);
    }
    const uint64_t* base;
    if (p.xt) {
      base = p.xt + n * p.H * RS;
    } else {
      base = rows.data();
      for (int k = 0; k < nvi * nrows; ++k) {
        const int64_t ih = (oh + k / nvi) * p.sh - p.ph + vi[k % nvi] * p.dh, r = n * p.H + ih, sl = slot(ih);
        if (tags[sl] == r) continue;
        const uint64_t* src_row = p.x ? p.x + r * p.W * CW : packed_row.data();
        if (!p.x) {
          if (p.src_scale)
            binarize_pack_affine_rows(*p.src, p.src_scale, p.src_shift, packed_row.data(), r, r + 1, p.src_isa);
          else
            pack_rows(*p.src, r, r + 1, packed_row.data(), p.src_isa);
        }
        prepare_row(p, src_row, rows.data() + sl * RS);
        if (mirror) std::memcpy(rows.data() + (sl + Rr) * RS, rows.data() + sl * RS, sizeof(uint64_t) * RS);
        tags[sl] = r;
      }
    }
    int nk = 0;
    for (int k = 0; k < nvi; ++k) {
      const int64_t i = vi[k];
      const int64_t ih = oh * p.sh - p.ph + i * p.dh;
      const int64_t roff = (p.xt ? ih : mirror ? slot(oh * p.sh - p.ph) + i * p.dh : slot(ih)) * RS;
      for (int64_t j = 0; j < p.KW; ++j) {
        const int64_t jd = j * p.dw, ph = jd % p.sw, t0 = jd / p.sw;
        for (int64_t c = 0; c < CW; ++c) {
          xoff[nk] = roff + (c * p.sw + ph) * Wq + t0;
          woff[nk] = (i * p.KW + j) * CW + c;
          ++nk;
        }
      }
    }
    const uint64_t* wo = p.w + o0 * KT * CW;
    const uint16_t* tab = nullptr;
    // The valid taps' steps are one contiguous run of the weight's (valid rows are contiguous, woff rises).
    if (!wtab.empty() && nk > 0 && woff[nk - 1] - woff[0] == nk - 1) {
      if (!wtab_ready[ob]) {
        xnor_gemm_tables_avx2(wo, KT * CW, no, static_cast<int>(KT * CW), wtab.data() + o0 * KT * CW * 8, KT * CW * 8);
        wtab_ready[ob] = 1;
      }
      tab = wtab.data() + o0 * KT * CW * 8 + 8 * woff[0];
    }
    if (nrows == 2)
      xnor_gemm_block_avx2(base, xoff.data(), nk, wo, KT * CW, woff.data(), no, static_cast<int>(Wop), S.data(), Sst,
                           tab, KT * CW * 8, p.sh * RS);
    else
      xnor_gemm_block(base, xoff.data(), nk, wo, KT * CW, woff.data(), no, static_cast<int>(Wop), S.data(), Sst,
                      isa, tab, KT * CW * 8);

    const int32_t* wp = wpop + o0 * KT;
    if (pad_m1) {
      for (int64_t q = 0; q < p.Wo; ++q) k0[q] = static_cast<int32_t>(KT * p.Cin);
      if (nvi < p.KH) {
        for (int o = 0; o < no; ++o) {
          int32_t e = 0;
          for (int64_t i = 0, k = 0; i < p.KH; ++i) {
            if (k < nvi && vi[k] == i) {
              ++k;
              continue;
            }
            for (int64_t j = 0; j < p.KW; ++j) e += wp[o * KT + i * p.KW + j];
          }
          for (int r = 0; r < nrows; ++r) {
            int32_t* s = S.data() + o * Sst + r * Wop;
            for (int64_t q = 0; q < p.Wo; ++q) s[q] += e;
          }
        }
      }
    } else {
      const int32_t kv = static_cast<int32_t>(nvi * p.KW * p.Cin);
      for (int64_t q = c_lo; q < c_hi; ++q) k0[q] = kv;
      if (!border.empty()) {
        const int64_t first = nvi ? vi[0] : -1;
        const EdgeTable* tab = nullptr;
        for (const EdgeTable& t : edges)
          if (t.nvi == nvi && t.first == first) tab = &t;
        if (!tab) {
          EdgeTable t{nvi, first, std::vector<int32_t>(border.size() * p.Cout)};
          for (size_t bi = 0; bi < border.size(); ++bi) {
            int32_t* e = t.edge.data() + bi * p.Cout;
            for (int k = 0; k < nvi; ++k)
              for (int64_t j = 0; j < p.KW; ++j) {
                if (tap_inside(border[bi], j)) continue;
                const int32_t* wt = wpop + vi[k] * p.KW + j;
                for (int64_t o = 0; o < p.Cout; ++o) e[o] += wt[o * KT];
              }
          }
          edges.push_back(std::move(t));
          tab = &edges.back();
        }
        for (size_t bi = 0; bi < border.size(); ++bi) {
          const int64_t ow = border[bi];
          k0[ow] = static_cast<int32_t>(nvi * border_taps[bi] * p.Cin);
          const int32_t* e = tab->edge.data() + bi * p.Cout + o0;
          for (int r = 0; r < nrows; ++r)
            for (int o = 0; o < no; ++o) S[o * Sst + r * Wop + ow] -= e[o];
        }
      }
    }
    for (int r = 0; r < nrows; ++r) {
      if (dbl)
        epilogue<double>(pe, n, oh + r, o0, no, 0, static_cast<int>(p.Wo), S.data() + r * Wop, Sst, k0.data(), nullptr);
      else
        epilogue<float>(pe, n, oh + r, o0, no, 0, static_cast<int>(p.Wo), S.data() + r * Wop, Sst, k0.data(), nullptr);
    }
  };
  // Rows whose vertical taps all fall inside the image (what a pair needs of both rows).
  const auto interior = [&](int64_t oh) { return oh * p.sh - p.ph >= 0 && oh * p.sh - p.ph + (p.KH - 1) * p.dh < p.H; };
  const int64_t pshift = p.row_pairs ? pair_shift(p) : 0, npairs = (p.Ho + pshift + 1) / 2;
  // (row_pairs fixes what a unit is; the paired kernel also needs what xnor_conv_row_pairs_fit checks)
  const bool pair_kernel = isa == Isa::Avx2 && (Wop == 16 || Wop == 8) && (p.xt != nullptr || mirror);

  do {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t ob = u % nob, ur = u / nob;
      if (p.row_pairs) {
        const int64_t n = ur / npairs, oh = 2 * (ur % npairs) - pshift;
        if (pair_kernel && oh >= 0 && oh + 1 < p.Ho && interior(oh) && interior(oh + 1)) {
          one_row(n, oh, ob, p, 2);
          continue;
        }
        for (int64_t r = std::max<int64_t>(oh, 0); r < std::min(oh + 2, p.Ho); ++r) one_row(n, r, ob, p);
        continue;
      }
      if (!p.pool) {
        one_row(ur / p.Ho, ur % p.Ho, ob, p);
        continue;
      }
      const int64_t Hp = (p.Ho + 1) / 2, n = ur / Hp, oh = 2 * (ur % Hp);
      one_row(n, oh, ob, rows_p[0]);
      if (oh + 1 >= p.Ho) continue;  // odd Ho: the last row only feeds out_packed
      one_row(n, oh + 1, ob, rows_p[1]);
      const int64_t o0 = ob * cb;
      const int no = static_cast<int>(std::min(cb, p.Cout - o0));
      if (dbl)
        pool_rows<double>(p, scratch.data(), n, oh / 2, o0, no);
      else
        pool_rows<float>(p, reinterpret_cast<const float*>(scratch.data()), n, oh / 2, o0, no);
    }
  } while (next(ctx, &begin, &end));
}

}  // namespace core
}  // namespace fastpose
