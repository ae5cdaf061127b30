// Plan and index vectors of the input-gradient permute GEMM (xnor_ste_input.h); the rows per ISA.
#include "core/xnor_ste_input.h"

#include <algorithm>
#include <stdexcept>

namespace fastpose {
namespace core {

void ste_input_rows_avx512(const SteInputProblem& p, const SteInputPlan& pl, const int32_t* idx, float* ring,
                           int64_t begin, int64_t end);
void ste_input_rows_avx2(const SteInputProblem& p, const SteInputPlan& pl, const int32_t* idx, float* ring,
                         int64_t begin, int64_t end);

namespace {
int lanes_of(Isa isa) { return isa == Isa::Avx512 ? 16 : isa == Isa::Avx2 ? 8 : 0; }
}  // namespace

SteInputPlan ste_input_plan(const SteInputProblem& p, Isa isa) {
  SteInputPlan pl;
  pl.L = lanes_of(isa);
  if (!pl.L) throw std::invalid_argument("ste_input_plan: the permute GEMM needs AVX2 or AVX-512");
  pl.G = pl.L == 16 ? 4 : 3;  // 2^G table entries = the lanes of one vector
  pl.CG = (p.Cout + pl.G - 1) / pl.G;
  pl.CV = (p.Cin + pl.L - 1) / pl.L;
  // Register blocks (kernel header): R pixels x up to 4 (AVX-512) / 2 (AVX2) channel vectors. Narrow
  // rows take 4.
  pl.R = p.W <= 4 ? 4 : 8;
  pl.Wp = (p.W + pl.R - 1) / pl.R * pl.R;
  pl.lo = p.pw - p.KW + 1;
  pl.RW = pl.Wp + p.KW - 1;
  pl.idx_ints = static_cast<size_t>(p.KH * p.KW * pl.CG * pl.CV * pl.L);
  const int64_t col = (pl.CG * pl.G + pl.L - 1) / pl.L * pl.L;
  pl.ring_floats = static_cast<size_t>((p.KH + 1) * pl.RW * pl.CG * pl.L + col);
  return pl;
}

void ste_input_indices(const SteInputProblem& p, const SteInputPlan& pl, int32_t* idx, int64_t tap_begin,
                       int64_t tap_end) {
  const int64_t taps = p.KH * p.KW, vec = pl.CV * pl.L;
  for (int64_t tap = tap_begin; tap < tap_end; ++tap) {
    int32_t* at = idx + tap * pl.CG * vec;
    std::fill(at, at + pl.CG * vec, 0);
    // Filter-major: each output channel's row of w read in order, its bit or-ed into one index vector run.
    for (int64_t co = 0; co < p.Cout; ++co) {
      const float* wr = p.w + co * p.Cin * taps + tap;
      int32_t* dst = at + (co / pl.G) * vec;
      const int32_t bit = 1 << (co % pl.G);
      for (int64_t ci = 0; ci < p.Cin; ++ci) dst[ci] |= wr[ci * taps] >= 0.f ? bit : 0;
    }
  }
}

void ste_input_rows(const SteInputProblem& p, const SteInputPlan& pl, const int32_t* idx, float* ring,
                    int64_t begin, int64_t end, Isa isa) {
  // The plan fixes the lanes and groups the index vectors and tables are laid out with.
  if (!lanes_of(isa) || lanes_of(isa) != pl.L)
    throw std::invalid_argument("ste_input_rows: needs AVX2 or AVX-512 and a plan made for that ISA");
#if defined(__x86_64__)
  if (isa == Isa::Avx512) return ste_input_rows_avx512(p, pl, idx, ring, begin, end);
  return ste_input_rows_avx2(p, pl, idx, ring, begin, end);
#else
  throw std::invalid_argument("ste_input_rows: x86-64 only");
#endif
}

}  // namespace core
}  // namespace fastpose
