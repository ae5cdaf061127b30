// The table GEMM of the straight-through weight gradient (core/xnor_ste_gemm.h) against a direct double
// sum, for every ISA path: channel counts around the vector and block sizes, kernels 1-5, every padding up
// to the kernel size, both pad values, both layouts of g, jobs split at every place.
#include <cmath>
#include <random>
#include <vector>

#include "core/xnor_conv.h"
#include "core/xnor_ste_gemm.h"
#include "test_util.h"

using namespace fastpose::core;

namespace {

void check(Isa isa, int64_t N, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t KH, int64_t KW, int64_t ph,
           int64_t pw, bool pad_zero, bool nhwc, int splits, std::mt19937& rng) {
  const int64_t Ho = H + 2 * ph - KH + 1, Wo = W + 2 * pw - KW + 1, CW = xnor_words(Cin);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> g(N * Cout * Ho * Wo);
  for (auto& v : g) v = nd(rng);
  std::vector<uint64_t> sign(N * H * W * CW, 0);
  for (int64_t i = 0; i < N * H * W; ++i)
    for (int64_t c = 0; c < Cin; ++c)
      if (rng() & 1) sign[i * CW + c / 64] |= uint64_t(1) << (c % 64);
  SteWeightProblem p{{N, Cin, H, W, Cout, KH, KW, ph, pw, Ho, Wo, g.data(), 0, 0, 0, 0}, sign.data(), CW, pad_zero};
  if (nhwc)
    p.gsn = Ho * Wo * Cout, p.gsc = 1, p.gsh = Wo * Cout, p.gsw = Cout;
  else
    p.gsn = Cout * Ho * Wo, p.gsc = Ho * Wo, p.gsh = Wo, p.gsw = 1;
  const SteWeightPlan pl = ste_weight_plan(p, isa);
  std::vector<uint8_t> nib(pl.nib_bytes + 1, 0xAB), zero(pl.zero_bytes, 0);
  nib.back() = 0x5C;
  ste_weight_nibbles(p, pl, nib.data(), 0, N * H, isa);
  FP_CHECK(nib.back() == 0x5C);
  std::vector<float> gwt(pl.gwt_floats + 16, 12345.f);
  for (int s = 0; s < splits; ++s)
    ste_weight_jobs(p, pl, nib.data(), zero.data(), gwt.data(), pl.jobs * s / splits, pl.jobs * (s + 1) / splits, isa);
  for (int i = 0; i < 16; ++i) FP_CHECK(gwt[pl.gwt_floats + i] == 12345.f);
  std::vector<float> G(Cout * Cin * KH * KW + 1, -3.f);
  for (int s = 0; s < splits; ++s) ste_weight_finish(p, pl, gwt.data(), G.data(), Cout * s / splits, Cout * (s + 1) / splits);
  FP_CHECK(G.back() == -3.f);
  for (int64_t co = 0; co < Cout; ++co)
    for (int64_t ci = 0; ci < Cin; ++ci)
      for (int64_t kh = 0; kh < KH; ++kh)
        for (int64_t kw = 0; kw < KW; ++kw) {
          double ref = 0, mag = 0;
          for (int64_t n = 0; n < N; ++n)
            for (int64_t y = 0; y < Ho; ++y)
              for (int64_t x = 0; x < Wo; ++x) {
                const int64_t yi = y + kh - ph, xi = x + kw - pw;
                double s = pad_zero ? 0.0 : -1.0;
                if (yi >= 0 && yi < H && xi >= 0 && xi < W)
                  s = (sign[((n * H + yi) * W + xi) * CW + ci / 64] >> (ci % 64)) & 1 ? 1.0 : -1.0;
                const double gv = g[n * p.gsn + co * p.gsc + y * p.gsh + x * p.gsw];
                ref += s * gv, mag += std::fabs(gv);
              }
          const double got = G[((co * Cin + ci) * KH + kh) * KW + kw];
          if (!(std::fabs(got - ref) <= 1e-5 * mag + 1e-6)) {
            std::fprintf(stderr, "N%ld Cin%ld H%ld W%ld Cout%ld K%ldx%ld pad%ld,%ld zero%d nhwc%d: (%ld,%ld,%ld,%ld) %g vs %g\n",
                         long(N), long(Cin), long(H), long(W), long(Cout), long(KH), long(KW), long(ph), long(pw),
                         int(pad_zero), int(nhwc), long(co), long(ci), long(kh), long(kw), got, ref);
            std::exit(1);
          }
        }
}

}  // namespace

int main() {
  return run_isa_test("test_xnor_ste_gemm", [](Isa isa) {
    std::mt19937 rng(7);
    for (int64_t Cout : {1, 5, 16, 17, 32, 48, 64, 65, 100, 128})
      for (int64_t Cin : {1, 3, 7, 24, 32, 64, 65, 129})
        check(isa, 2, Cin, 5, 7, Cout, 3, 3, 1, 1, (Cin + Cout) % 2 == 0, Cout % 3 == 0, 1 + int(Cin % 3), rng);
    for (int64_t K : {1, 2, 3, 5})
      for (int64_t pad = 0; pad < K; ++pad)
        for (bool pad_zero : {true, false})
          for (int64_t W : {1, 2, 3, 4, 5, 8, 9, 13}) {
            const int64_t H = std::max<int64_t>(W % 5 + 1, K - 2 * pad);
            if (W + 2 * pad < K) continue;
            check(isa, 1 + W % 2, 33, H, W, 20, K, K == 2 ? 3 : K, pad, K == 2 ? 1 : pad, pad_zero, W % 2 == 0, 3, rng);
          }
    check(isa, 3, 128, 16, 16, 64, 3, 3, 1, 1, true, true, 2, rng);
    check(isa, 2, 64, 32, 32, 64, 3, 3, 1, 1, false, true, 5, rng);
  });
}
