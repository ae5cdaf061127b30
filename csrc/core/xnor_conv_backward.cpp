// Straight-through backward of the XNOR convolution: the bit passes around the float GEMMs (see
// xnor_conv_backward.h). Everything here is memory-bound, one read and one write per element.
#include "core/xnor_conv_backward.h"

#include <vector>

#include <cmath>
#include <algorithm>
#include <cstring>

namespace fastpose {
namespace core {

void ste_pack_row_nhwc_f32_avx2(const float* src, int64_t C, int64_t W, int64_t sw, uint64_t* sign, uint64_t* pass,
                                int64_t CW);
void ste_unpack_px_f32_avx2(const uint64_t* words, int64_t C, float* dst);
void ste_mask_px_f32_avx2(const uint64_t* words, int64_t C, const float* g, float* out);
void ste_unpack_px_avx512(const uint64_t* words, int64_t C, float* dst);
void ste_unpack_px_avx512(const uint64_t* words, int64_t C, double* dst);
void ste_mask_px_avx512(const uint64_t* words, int64_t C, const float* g, float* out);
void ste_mask_px_avx512(const uint64_t* words, int64_t C, const double* g, double* out);

namespace {

inline float load_as_float(const void* base, ElemType t, int64_t i) {
  switch (t) {
    case ElemType::F32:
      return static_cast<const float*>(base)[i];
    case ElemType::F16:
      return half_to_float(static_cast<const uint16_t*>(base)[i]);
    case ElemType::BF16:
      return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
    case ElemType::F64:
      break;
  }
  return 0.f;
}

// Bits by comparison on the value: -0.0 >= 0 holds, every comparison with NaN fails (NaN -> 0, 0).
template <class V>
inline void bits_of(V v, uint64_t bit, uint64_t& s, uint64_t& p) {
  if (v >= V(0)) s |= bit;
  if (std::fabs(v) <= V(1)) p |= bit;
}

void ste_pack_row_generic(const PackSource& s, int64_t n, int64_t h, uint64_t* sign, uint64_t* pass, int64_t CW) {
  const int64_t base = n * s.sn + h * s.sh;
  for (int64_t w = 0; w < s.W; ++w) {
    const int64_t pb = base + w * s.sw;
    for (int64_t k = 0; k < CW; ++k) {
      uint64_t sb = 0, pbits = 0;
      const int64_t c1 = std::min<int64_t>(s.C, 64 * k + 64);
      for (int64_t c = 64 * k; c < c1; ++c) {
        const uint64_t bit = uint64_t(1) << (c & 63);
        const int64_t i = pb + c * s.sc;
        if (s.type == ElemType::F64)
          bits_of(static_cast<const double*>(s.data)[i], bit, sb, pbits);
        else
          bits_of(load_as_float(s.data, s.type, i), bit, sb, pbits);
      }
      sign[w * CW + k] = sb;
      pass[w * CW + k] = pbits;
    }
  }
}

// NCHW rows: channel planes are strided, so accumulate bits plane by plane into the row's words.
void ste_pack_row_planes(const PackSource& s, int64_t n, int64_t h, uint64_t* sign, uint64_t* pass, int64_t CW) {
  std::memset(sign, 0, sizeof(uint64_t) * s.W * CW);
  std::memset(pass, 0, sizeof(uint64_t) * s.W * CW);
  const int64_t base = n * s.sn + h * s.sh;
  for (int64_t c = 0; c < s.C; ++c) {
    const int sh = static_cast<int>(c & 63);
    uint64_t* sd = sign + (c >> 6);
    uint64_t* pd = pass + (c >> 6);
    const int64_t cb = base + c * s.sc;
    if (s.type == ElemType::F32) {
      const float* row = static_cast<const float*>(s.data) + cb;
      for (int64_t w = 0; w < s.W; ++w) {
        const float v = row[w * s.sw];
        sd[w * CW] |= static_cast<uint64_t>(v >= 0.f) << sh;
        pd[w * CW] |= static_cast<uint64_t>(std::fabs(v) <= 1.f) << sh;
      }
    } else if (s.type == ElemType::F64) {
      const double* row = static_cast<const double*>(s.data) + cb;
      for (int64_t w = 0; w < s.W; ++w) {
        const double v = row[w * s.sw];
        sd[w * CW] |= static_cast<uint64_t>(v >= 0.0) << sh;
        pd[w * CW] |= static_cast<uint64_t>(std::fabs(v) <= 1.0) << sh;
      }
    } else {
      for (int64_t w = 0; w < s.W; ++w) {
        const float v = load_as_float(s.data, s.type, cb + w * s.sw);
        sd[w * CW] |= static_cast<uint64_t>(v >= 0.f) << sh;
        pd[w * CW] |= static_cast<uint64_t>(std::fabs(v) <= 1.f) << sh;
      }
    }
  }
}

// One pixel's channels (contiguous), bits -> +-1 / masked gradient, on the widest ISA there is.
template <class T>
inline void unpack_px(const uint64_t* words, int64_t C, T* dst, Isa isa) {
  if (isa == Isa::Avx512) return ste_unpack_px_avx512(words, C, dst);
  if (isa == Isa::Avx2 && sizeof(T) == 4) return ste_unpack_px_f32_avx2(words, C, reinterpret_cast<float*>(dst));
  for (int64_t c = 0; c < C; ++c) dst[c] = ((words[c >> 6] >> (c & 63)) & 1) ? T(1) : T(-1);
}

template <class T>
inline void mask_px(const uint64_t* words, int64_t C, const T* g, T* out, Isa isa) {
  if (isa == Isa::Avx512) return ste_mask_px_avx512(words, C, g, out);
  if (isa == Isa::Avx2 && sizeof(T) == 4)
    return ste_mask_px_f32_avx2(words, C, reinterpret_cast<const float*>(g), reinterpret_cast<float*>(out));
  for (int64_t c = 0; c < C; ++c) out[c] = ((words[c >> 6] >> (c & 63)) & 1) ? g[c] : T(0);
}

template <class T>
void unpack_rows(const uint64_t* sign, int64_t CW, const UnpackTarget& d, int64_t begin, int64_t end, Isa isa) {
  const int64_t H = d.Hp - 2 * d.ph, W = d.Wp - 2 * d.pw;
  const T one = T(1), border = static_cast<T>(d.border);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / d.Hp, hp = r % d.Hp, h = hp - d.ph;
    T* row = static_cast<T*>(d.data) + n * d.sn + hp * d.sh;
    if (h < 0 || h >= H) {
      for (int64_t w = 0; w < d.Wp; ++w)
        for (int64_t c = 0; c < d.C; ++c) row[w * d.sw + c * d.sc] = border;
      continue;
    }
    for (int64_t wp = 0; wp < d.Wp; ++wp) {
      const int64_t w = wp - d.pw;
      T* px = row + wp * d.sw;
      if (w < 0 || w >= W) {
        for (int64_t c = 0; c < d.C; ++c) px[c * d.sc] = border;
        continue;
      }
      const uint64_t* words = sign + ((n * H + h) * W + w) * CW;
      if (d.sc == 1) {
        unpack_px<T>(words, d.C, px, isa);
      } else {
        for (int64_t c = 0; c < d.C; ++c) px[c * d.sc] = ((words[c >> 6] >> (c & 63)) & 1) ? one : -one;
      }
    }
  }
}

template <class T>
void mask_rows(const MaskProblem& p, int64_t begin, int64_t end, Isa isa) {
  const T* g = static_cast<const T*>(p.g);
  T* out = static_cast<T*>(p.out);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / p.H, h = r % p.H;
    const T* grow = g + n * p.gsn + (h + p.oh) * p.gsh + p.ow * p.gsw;
    T* orow = out + n * p.osn + h * p.osh;
    const uint64_t* bits = p.pass + (n * p.H + h) * p.W * p.CW;
    if (p.gsc == 1 && p.osc == 1) {
      for (int64_t w = 0; w < p.W; ++w) {
        const T* gp = grow + w * p.gsw;
        T* op = orow + w * p.osw;
        mask_px<T>(bits + w * p.CW, p.C, gp, op, isa);
      }
    } else {
      for (int64_t c = 0; c < p.C; ++c) {
        const T* gc = grow + c * p.gsc;
        T* oc = orow + c * p.osc;
        const uint64_t* cb = bits + (c >> 6);
        const int sh = static_cast<int>(c & 63);
        for (int64_t w = 0; w < p.W; ++w) oc[w * p.osw] = ((cb[w * p.CW] >> sh) & 1) ? gc[w * p.gsw] : T(0);
      }
    }
  }
}

}  // namespace

void ste_pack(const PackSource& s, uint64_t* sign, uint64_t* pass, int64_t begin, int64_t end, Isa isa) {
  const int64_t CW = xnor_words(s.C);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / s.H, h = r % s.H;
    uint64_t* sd = sign + r * s.W * CW;
    uint64_t* pd = pass + r * s.W * CW;
    if (s.type == ElemType::F32 && s.sc == 1 && isa != Isa::Portable)
      ste_pack_row_nhwc_f32_avx2(static_cast<const float*>(s.data) + n * s.sn + h * s.sh, s.C, s.W, s.sw, sd, pd,
                                 CW);
    else if (s.sc == 1 || s.sw != 1)
      ste_pack_row_generic(s, n, h, sd, pd, CW);
    else
      ste_pack_row_planes(s, n, h, sd, pd, CW);
  }
}

void sign_unpack(const uint64_t* sign, int64_t CW, const UnpackTarget& dst, int64_t begin, int64_t end, Isa isa) {
  if (dst.type == ElemType::F64)
    unpack_rows<double>(sign, CW, dst, begin, end, isa);
  else
    unpack_rows<float>(sign, CW, dst, begin, end, isa);
}

void ste_mask(const MaskProblem& p, int64_t begin, int64_t end, Isa isa) {
  if (p.type == ElemType::F64)
    mask_rows<double>(p, begin, end, isa);
  else
    mask_rows<float>(p, begin, end, isa);
}

namespace {

// sum_k a[k] * b[k] with kLanes independent partial sums (the reduction vectorises and does not serialise).
template <class T>
T lane_dot(const T* a, const T* b, int64_t K) {
  constexpr int kLanes = 8;
  T part[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes)
    for (int j = 0; j < kLanes; ++j) part[j] += a[k + j] * b[k + j];
  T dotp = T(0);
  for (int j = 0; j < kLanes; ++j) dotp += part[j];
  for (; k < K; ++k) dotp += a[k] * b[k];
  return dotp;
}

}  // namespace

template <class T>
void ste_weight_chain(const T* G, int64_t gso, int64_t gsc, int64_t gsh, int64_t gsw, const T* w, const T* alpha,
                      int64_t Cin, int64_t KH, int64_t KW, T* gw, int64_t oso, int64_t osc, int64_t osh, int64_t osw,
                      int64_t begin, int64_t end) {
  const int64_t K = Cin * KH * KW;
  // G of one filter in w's (contiguous) order, the order the dot sums in: read in place when G is laid out
  // so (the table GEMM's), else gathered.
  const bool g_dense = gsw == 1 && gsh == KW && gsc == KH * KW, out_dense = osw == 1 && osh == KW && osc == KH * KW;
  std::vector<T> g(g_dense ? 0 : K);
  for (int64_t o = begin; o < end; ++o) {
    const T* wo = w + o * K;
    const T* gk = G + o * gso;
    if (!g_dense) {
      for (int64_t ci = 0, k = 0; ci < Cin; ++ci)
        for (int64_t kh = 0; kh < KH; ++kh)
          for (int64_t kw = 0; kw < KW; ++kw, ++k) g[k] = gk[ci * gsc + kh * gsh + kw * gsw];
      gk = g.data();
    }
    T* out = gw + o * oso;
    const T a = alpha ? alpha[o] : T(1), m = alpha ? lane_dot(gk, wo, K) / static_cast<T>(K) : T(0);
    auto value = [&](int64_t k) {
      const T sg = static_cast<T>(wo[k] > T(0)) - static_cast<T>(wo[k] < T(0));
      return a * gk[k] + sg * m;
    };
    if (out_dense) {  // one contiguous loop (vectorises)
      if (alpha)
        for (int64_t k = 0; k < K; ++k) out[k] = value(k);
      else
        std::copy(gk, gk + K, out);
      continue;
    }
    for (int64_t ci = 0, k = 0; ci < Cin; ++ci)
      for (int64_t kh = 0; kh < KH; ++kh)
        for (int64_t kw = 0; kw < KW; ++kw, ++k) out[ci * osc + kh * osh + kw * osw] = alpha ? value(k) : gk[k];
  }
}

template void ste_weight_chain<float>(const float*, int64_t, int64_t, int64_t, int64_t, const float*, const float*,
                                      int64_t, int64_t, int64_t, float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                      int64_t);
template void ste_weight_chain<double>(const double*, int64_t, int64_t, int64_t, int64_t, const double*,
                                       const double*, int64_t, int64_t, int64_t, double*, int64_t, int64_t, int64_t,
                                       int64_t, int64_t, int64_t);

}  // namespace core
}  // namespace fastpose
