// Plan and index vectors of the input-gradient permute GEMM (xnor_ste_input.h); the rows on AVX-512.
#include "core/xnor_ste_input.h"

#include <algorithm>
#include <stdexcept>

namespace fastpose {
namespace core {

void ste_input_rows_avx512(const SteInputProblem& p, const SteInputPlan& pl, const int32_t* idx, float* ring,
                           int64_t begin, int64_t end);

SteInputPlan ste_input_plan(const SteInputProblem& p) {
  SteInputPlan pl;
  pl.CG = (p.Cout + 3) / 4;
  pl.CV = (p.Cin + 15) / 16;
  // Register blocks (kernel file): R pixels x up to 4 channel vectors of accumulators. Narrow rows take 4.
  pl.R = p.W <= 4 ? 4 : 8;
  pl.Wp = (p.W + pl.R - 1) / pl.R * pl.R;
  pl.lo = p.pw - p.KW + 1;
  pl.RW = pl.Wp + p.KW - 1;
  pl.idx_ints = static_cast<size_t>(p.KH * p.KW * pl.CG * pl.CV * 16);
  pl.ring_floats = static_cast<size_t>((p.KH + 1) * pl.RW * pl.CG * 16);
  return pl;
}

void ste_input_indices(const SteInputProblem& p, const SteInputPlan& pl, int32_t* idx) {
  const int64_t taps = p.KH * p.KW;
  for (int64_t tap = 0; tap < taps; ++tap)
    for (int64_t cg = 0; cg < pl.CG; ++cg)
      for (int64_t ci = 0; ci < pl.CV * 16; ++ci) {
        int32_t v = 0;
        if (ci < p.Cin)
          for (int j = 0; j < 4; ++j) {
            const int64_t co = 4 * cg + j;
            if (co < p.Cout && p.w[(co * p.Cin + ci) * taps + tap] >= 0.f) v |= 1 << j;
          }
        idx[((tap * pl.CG + cg) * pl.CV) * 16 + ci] = v;
      }
}

void ste_input_rows(const SteInputProblem& p, const SteInputPlan& pl, const int32_t* idx, float* ring,
                    int64_t begin, int64_t end, Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::Avx512) return ste_input_rows_avx512(p, pl, idx, ring, begin, end);
#endif
  throw std::invalid_argument("ste_input_rows: the permute GEMM needs AVX-512");
}

}  // namespace core
}  // namespace fastpose
