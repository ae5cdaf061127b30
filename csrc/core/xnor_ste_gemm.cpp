// Plan, nibble rows and zero-padding fix of the table GEMM (xnor_ste_gemm.h); the jobs per ISA.
#include "core/xnor_ste_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "core/dtypes.h"

namespace fastpose {
namespace core {

void ste_weight_jobs_avx512(const SteWeightProblem& p, const SteWeightPlan& pl, const uint8_t* nib,
                            const uint8_t* zero, float* gwt, int64_t begin, int64_t end);
void ste_weight_nibbles_avx512(const SteWeightProblem& p, const SteWeightPlan& pl, uint8_t* nib, int64_t begin,
                               int64_t end);
void ste_weight_jobs_avx2(const SteWeightProblem& p, const SteWeightPlan& pl, const uint8_t* nib,
                          const uint8_t* zero, float* gwt, int64_t begin, int64_t end);

namespace {
#include "core/simd/vec_scalar.h"
#include "core/xnor_ste_gemm_kernel.h"

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// spread[b]: byte i = bit i of b.
struct Spread {
  uint64_t v[256];
  Spread() {
    for (int b = 0; b < 256; ++b) {
      v[b] = 0;
      for (int i = 0; i < 8; ++i) v[b] |= static_cast<uint64_t>((b >> i) & 1) << (8 * i);
    }
  }
};
const Spread kSpread;

}  // namespace

SteWeightPlan ste_weight_plan(const SteWeightProblem& p, Isa isa) {
  SteWeightPlan pl;
  const int L = isa == Isa::Avx512 ? 16 : isa == Isa::Avx2 ? 8 : 1;
  const int acc = isa == Isa::Avx512 ? 24 : 12;  // accumulators the registers hold (32 zmm / 16 ymm)
  pl.V = static_cast<int>(std::min<int64_t>(4, ceil_div(std::max<int64_t>(p.Cout, 1), L)));
  pl.B = acc / pl.V;
  pl.CoC = int64_t(pl.V) * L;
  pl.chunks = ceil_div(p.Cout, pl.CoC);
  pl.CoP = pl.chunks * pl.CoC;
  pl.CinP = ceil_div(p.Cin, pl.B) * pl.B;
  pl.CinN = ceil_div(p.Cin, 24) * 24 + 8;  // every B divides 24; +8: whole-word reads past the last block
  pl.Wg = ceil_div(p.Wo, 4);
  pl.NW = 4 * (pl.Wg - 1) + p.KW;
  pl.groups = p.N * p.Ho * pl.Wg;
  pl.cblocks = pl.CinP / pl.B;
  pl.jobs = pl.chunks * p.KH * p.KW * pl.cblocks;
  pl.nib_bytes = static_cast<size_t>(p.N * p.H * pl.NW * pl.CinN);
  pl.zero_bytes = static_cast<size_t>(pl.NW * pl.CinN);
  pl.gwt_floats = static_cast<size_t>(p.KH * p.KW * pl.CinP * pl.CoP);
  return pl;
}

void ste_weight_nibbles(const SteWeightProblem& p, const SteWeightPlan& pl, uint8_t* nib, int64_t begin,
                        int64_t end, Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::Avx512) return ste_weight_nibbles_avx512(p, pl, nib, begin, end);
#endif
  for_each_nibble_position(p, pl, nib, begin, end, [&](const uint64_t* const* wj, uint8_t* dst) {
    for (int64_t c = 0; c < pl.CinN; c += 8) {
      uint64_t v = 0;
      if (c < 64 * p.CW)
        for (int j = 0; j < 4; ++j)
          if (wj[j]) v |= kSpread.v[(wj[j][c >> 6] >> (c & 63)) & 255] << j;
      std::memcpy(dst + c, &v, 8);
    }
  });
}

void ste_weight_jobs(const SteWeightProblem& p, const SteWeightPlan& pl, const uint8_t* nib, const uint8_t* zero,
                     float* gwt, int64_t begin, int64_t end, Isa isa) {
  // The plan fixes the block sizes the jobs index with: it must come from the same ISA.
  if (ste_weight_plan(p, isa).B != pl.B) throw std::invalid_argument("ste_weight_jobs: plan made for another ISA");
#if defined(__x86_64__)
  if (isa == Isa::Avx512) return ste_weight_jobs_avx512(p, pl, nib, zero, gwt, begin, end);
  if (isa == Isa::Avx2) return ste_weight_jobs_avx2(p, pl, nib, zero, gwt, begin, end);
#endif
  ste_weight_jobs_impl<VecScalar<float>, 12>(p, pl, nib, zero, gwt, begin, end);
}

namespace {

// fix[tap * nc + c]: sum of g over the output pixels whose tap is outside the image, channel begin + c.
// Only output pixels near the border have such taps.
void pad_fix(const SteWeightProblem& p, int64_t begin, int64_t end, std::vector<double>& fix) {
  const int64_t taps = p.KH * p.KW, nc = end - begin;
  fix.assign(static_cast<size_t>(taps * nc), 0.0);
  std::vector<int64_t> out_taps;
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t y = 0; y < p.Ho; ++y) {
      const bool edge_row = y < p.ph || y >= p.Ho - p.ph;
      for (int64_t x = 0; x < p.Wo; ++x) {
        if (!edge_row && x == p.pw && p.Wo - p.pw > x) x = p.Wo - p.pw;  // skip the interior of the row
        if (x >= p.Wo) break;
        out_taps.clear();
        for (int64_t kh = 0; kh < p.KH; ++kh)
          for (int64_t kw = 0; kw < p.KW; ++kw) {
            const int64_t yi = y + kh - p.ph, xi = x + kw - p.pw;
            if (yi < 0 || yi >= p.H || xi < 0 || xi >= p.W) out_taps.push_back(kh * p.KW + kw);
          }
        const float* g = p.g + n * p.gsn + y * p.gsh + x * p.gsw + begin * p.gsc;
        for (const int64_t tap : out_taps) {
          double* f = fix.data() + tap * nc;
          for (int64_t c = 0; c < nc; ++c) f[c] += g[c * p.gsc];
        }
      }
    }
}

}  // namespace

void ste_weight_finish(const SteWeightProblem& p, const SteWeightPlan& pl, const float* gwt, float* G,
                       int64_t begin, int64_t end) {
  const int64_t taps = p.KH * p.KW, K = p.Cin * taps, nc = end - begin;
  std::vector<double> fix;
  if (p.pad_zero && (p.ph > 0 || p.pw > 0)) pad_fix(p, begin, end, fix);
  constexpr int64_t kB = 16;  // 16 x 16 blocks: 16 source rows of channels, 16 filter positions
  for (int64_t c0 = begin; c0 < end; c0 += kB) {
    const int64_t c1 = std::min(end, c0 + kB);
    for (int64_t k0 = 0; k0 < K; k0 += kB) {
      const int64_t k1 = std::min(K, k0 + kB);
      for (int64_t k = k0; k < k1; ++k) {  // k = ci * taps + tap, the weight's order
        const int64_t ci = k / taps, tap = k % taps;
        const float* src = gwt + (tap * pl.CinP + ci) * pl.CoP;
        const double* f = fix.empty() ? nullptr : fix.data() + tap * nc;
        for (int64_t co = c0; co < c1; ++co)
          G[co * K + k] = f ? static_cast<float>(src[co] + f[co - begin]) : src[co];
      }
    }
  }
}

}  // namespace core
}  // namespace fastpose
