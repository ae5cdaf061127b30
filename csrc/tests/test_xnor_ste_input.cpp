// The permute GEMM of the straight-through input gradient (core/xnor_ste_input.h) against a direct double sum
// on AVX-512 and AVX2 (the portable path must refuse it): channel counts around the group and vector sizes, kernels
// 1-5, every padding up to the kernel size, widths around the register blocks, both layouts of g, with and
// without alpha, rows split at every place; guard values around the output.
#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

#include "core/xnor_conv.h"
#include "core/xnor_ste_input.h"
#include "test_util.h"

using namespace fastpose::core;

namespace {

void check(Isa isa, int64_t N, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t KH, int64_t KW, int64_t ph, int64_t pw,
           bool nhwc, bool with_alpha, int splits, std::mt19937& rng) {
  const int64_t Ho = H + 2 * ph - KH + 1, Wo = W + 2 * pw - KW + 1, CW = xnor_words(Cin);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> g(N * Cout * Ho * Wo), w(Cout * Cin * KH * KW), alpha(Cout);
  for (auto& v : g) v = nd(rng);
  for (auto& v : w) v = nd(rng);
  for (auto& v : alpha) v = std::fabs(nd(rng)) + 0.1f;
  w[0] = -0.0f;  // the forward's sign: -0 is +1
  std::vector<uint64_t> pass(N * H * W * CW, 0);
  for (int64_t i = 0; i < N * H * W; ++i)
    for (int64_t c = 0; c < Cin; ++c)
      if (rng() % 4 != 0) pass[i * CW + c / 64] |= uint64_t(1) << (c % 64);
  // gx (N, H, W, Cin) with a padded pixel stride and guards: only the Cin channels of each pixel are written.
  const int64_t xsw = Cin + 3, xsh = W * xsw, xsn = H * xsh;
  std::vector<float> gx(N * xsn + 16, 777.f);
  SteInputProblem p{{N, Cin, H, W, Cout, KH, KW, ph, pw, Ho, Wo, g.data(), 0, 0, 0, 0}, w.data(),
                    with_alpha ? alpha.data() : nullptr, pass.data(), CW, gx.data(), xsn, xsh, xsw};
  if (nhwc)
    p.gsn = Ho * Wo * Cout, p.gsc = 1, p.gsh = Wo * Cout, p.gsw = Cout;
  else
    p.gsn = Cout * Ho * Wo, p.gsc = Ho * Wo, p.gsh = Wo, p.gsw = 1;
  const SteInputPlan pl = ste_input_plan(p, isa);
  std::vector<int32_t> idx(pl.idx_ints);
  for (int s = 0; s < splits; ++s) ste_input_indices(p, pl, idx.data(), KH * KW * s / splits, KH * KW * (s + 1) / splits);
  std::vector<float> ring(pl.ring_floats + 16);
  float* ra = ring.data() + ((16 - (reinterpret_cast<uintptr_t>(ring.data()) / sizeof(float)) % 16) % 16);
  for (int s = 0; s < splits; ++s)
    ste_input_rows(p, pl, idx.data(), ra, N * H * s / splits, N * H * (s + 1) / splits, isa);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const float* got = gx.data() + n * xsn + y * xsh + x * xsw;
        for (int64_t c = Cin; c < xsw; ++c) FP_CHECK(got[c] == 777.f);
        for (int64_t ci = 0; ci < Cin; ++ci) {
          double ref = 0, mag = 0;
          for (int64_t co = 0; co < Cout; ++co)
            for (int64_t kh = 0; kh < KH; ++kh)
              for (int64_t kw = 0; kw < KW; ++kw) {
                const int64_t yq = y + ph - kh, xq = x + pw - kw;
                if (yq < 0 || yq >= Ho || xq < 0 || xq >= Wo) continue;
                const double gv = double(g[n * p.gsn + co * p.gsc + yq * p.gsh + xq * p.gsw]) *
                                  (with_alpha ? double(alpha[co]) : 1.0);
                const double s = w[((co * Cin + ci) * KH + kh) * KW + kw] >= 0.f ? 1.0 : -1.0;
                ref += s * gv, mag += std::fabs(gv);
              }
          if (!((pass[((n * H + y) * W + x) * CW + ci / 64] >> (ci % 64)) & 1)) ref = 0, mag = 0;
          if (!(std::fabs(got[ci] - ref) <= 1e-5 * mag + 1e-6)) {
            std::fprintf(stderr, "N%ld Cin%ld H%ld W%ld Cout%ld K%ldx%ld pad%ld,%ld nhwc%d alpha%d: (%ld,%ld,%ld,%ld) %g vs %g\n",
                         long(N), long(Cin), long(H), long(W), long(Cout), long(KH), long(KW), long(ph), long(pw),
                         int(nhwc), int(with_alpha), long(n), long(ci), long(y), long(x), double(got[ci]), ref);
            std::exit(1);
          }
        }
      }
  for (int i = 0; i < 16; ++i) FP_CHECK(gx[N * xsn + i] == 777.f);
}

}  // namespace

int main() {
  return run_isa_test("test_xnor_ste_input", [](Isa isa) {
    if (isa == Isa::Portable) {
      // Only AVX2 / AVX-512 have the kernel; the portable path must refuse rather than compute.
      SteInputProblem p{{1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, nullptr, 1, 1, 1, 1}, nullptr, nullptr, nullptr, 1,
                        nullptr, 1, 1, 1};
      bool threw = false;
      try {
        ste_input_plan(p, isa);
      } catch (const std::invalid_argument&) {
        threw = true;
      }
      FP_CHECK(threw);
      return;
    }
    std::mt19937 rng(11);
    for (int64_t Cout : {1, 3, 4, 5, 16, 17, 32, 64, 65})
      for (int64_t Cin : {1, 7, 16, 17, 33, 48, 64, 65, 80, 129})
        check(isa, 2, Cin, 5, 7, Cout, 3, 3, 1, 1, Cout % 2 == 0, Cin % 3 != 0, 1 + int(Cin % 3), rng);
    for (int64_t K : {1, 2, 3, 5})
      for (int64_t pad = 0; pad < K; ++pad)
        for (int64_t W : {1, 2, 3, 4, 5, 8, 9, 13, 17}) {
          const int64_t H = std::max<int64_t>(W % 5 + 1, K - 2 * pad);
          if (W + 2 * pad < K) continue;
          check(isa, 1 + W % 2, 20, H, W, 9, K, K == 2 ? 3 : K, pad, K == 2 ? 1 : pad, W % 2 == 0, W % 3 != 0, 3, rng);
        }
    check(isa, 1, 16, 4, 6, 8, 3, 3, 4, 5, true, true, 2, rng);  // padding past the kernel: tables start right of 0
    check(isa, 3, 128, 16, 16, 64, 3, 3, 1, 1, true, true, 2, rng);
    check(isa, 2, 64, 32, 32, 64, 3, 3, 1, 1, true, true, 5, rng);
  });
}
