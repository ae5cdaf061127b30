// C++ unit test of core/softmax_dsnt against a naive double-precision reference, for the ISA that
// FASTPOSE_ISA selects (ctest runs it once per ISA), including strided maps, -inf masks and 16-bit
// inputs. Runs under AddressSanitizer/UBSan in `make ctest`.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "core/softmax_dsnt.h"
#include "test_util.h"

using namespace fastpose::core;

namespace {

struct Ref {
  double x, y, m, s;
};

Ref reference(const std::vector<float>& v, int64_t off, int64_t H, int64_t W, int64_t sh) {
  double m = -INFINITY;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t w = 0; w < W; ++w) m = std::fmax(m, v[off + h * sh + w]);
  double s = 0, sx = 0, sy = 0;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t w = 0; w < W; ++w) {
      const double e = std::exp(v[off + h * sh + w] - m);
      s += e;
      sx += e * ((2.0 * w + 1) / W - 1);
      sy += e * ((2.0 * h + 1) / H - 1);
    }
  return {sx / s, sy / s, m, s};
}

void check_case(Isa isa, int64_t B, int64_t J, int64_t H, int64_t W, int64_t pad, bool mask, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 3.f);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  const int64_t sh = W + pad, sj = H * sh, sb = J * sj;
  std::vector<float> x(B * sb + 1);
  for (auto& v : x) v = nd(rng);
  if (mask)
    for (auto& v : x)
      if (ud(rng) < 0.5f) v = -INFINITY;
  for (int64_t m = 0; m < B * J; ++m) x[m * sj] = 1.0f;  // one finite logit per map
  DsntProblem p;
  p.logits = x.data();
  p.type = ElemType::F32;
  p.B = B;
  p.J = J;
  p.H = H;
  p.W = W;
  p.stride_b = sb;
  p.stride_j = sj;
  p.stride_h = sh;
  std::vector<float> stats(4 * B * J);
  FP_CHECK(softmax_dsnt_forward(p, 0, B * J, stats.data(), nullptr, isa) == 0);
  for (int64_t m = 0; m < B * J; ++m) {
    const Ref r = reference(x, m * sj, H, W, sh);
    FP_CHECK(std::fabs(stats[4 * m + 2] - r.x) < 2e-6);
    FP_CHECK(std::fabs(stats[4 * m + 3] - r.y) < 2e-6);
    // stats[0] is the reference subtracted before exp: within 30 below the maximum, with the sum
    // of exp(l - reference) consistent with it.
    FP_CHECK(stats[4 * m] <= static_cast<float>(r.m) && stats[4 * m] >= static_cast<float>(r.m) - 30.f);
    const double s_ref = r.s * std::exp(r.m - static_cast<double>(stats[4 * m]));
    FP_CHECK(std::fabs(stats[4 * m + 1] - s_ref) <= 1e-5 * s_ref);
  }
  // backward: grad_i = p_i * (gx (x_i - cx) + gy (y_i - cy))
  std::vector<float> gc(2 * B * J), out(B * J * H * W, NAN);
  for (auto& v : gc) v = nd(rng);
  softmax_dsnt_backward(p, 0, B * J, stats.data(), gc.data(), nullptr, out.data(), isa);
  for (int64_t m = 0; m < B * J; ++m) {
    const Ref r = reference(x, m * sj, H, W, sh);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        const double pr = std::exp(x[m * sj + h * sh + w] - r.m) / r.s;
        const double g = pr * (gc[2 * m] * ((2.0 * w + 1) / W - 1 - r.x) + gc[2 * m + 1] * ((2.0 * h + 1) / H - 1 - r.y));
        FP_CHECK(std::fabs(out[(m * H + h) * W + w] - g) < 1e-6);
      }
  }
}

void check_all_masked(Isa isa) {
  std::vector<float> x(12, -INFINITY);
  DsntProblem p;
  p.logits = x.data();
  p.B = 1;
  p.J = 2;
  p.H = 2;
  p.W = 3;
  p.stride_b = 12;
  p.stride_j = 6;
  p.stride_h = 3;
  x[7] = 0.5f;  // the second map has one finite logit
  std::vector<float> stats(8);
  FP_CHECK(softmax_dsnt_forward(p, 0, 2, stats.data(), nullptr, isa) == 1);
  FP_CHECK(std::isnan(stats[2]) && !std::isnan(stats[6]));
}

void check_half(Isa isa, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 2.f);
  const int64_t H = 9, W = 37;
  std::vector<uint16_t> h(H * W);
  std::vector<float> f(H * W);
  for (int64_t i = 0; i < H * W; ++i) {
    h[i] = float_to_half(nd(rng));
    f[i] = half_to_float(h[i]);
  }
  DsntProblem p;
  p.logits = h.data();
  p.type = ElemType::F16;
  p.B = p.J = 1;
  p.H = H;
  p.W = W;
  p.stride_b = p.stride_j = H * W;
  p.stride_h = W;
  std::vector<float> stats(4);
  FP_CHECK(softmax_dsnt_forward(p, 0, 1, stats.data(), nullptr, isa) == 0);
  const Ref r = reference(f, 0, H, W, W);
  FP_CHECK(std::fabs(stats[2] - r.x) < 2e-6 && std::fabs(stats[3] - r.y) < 2e-6);
}

}  // namespace

int main() {
  return run_isa_test("softmax_dsnt", [](Isa isa) {
    std::mt19937 rng(1234);
    const int64_t sizes[][4] = {{1, 1, 1, 1}, {2, 3, 5, 7}, {1, 2, 64, 48}, {2, 1, 17, 33}, {1, 1, 3, 1500}, {1, 2, 100, 9},
                                {2, 2, 64, 64}, {1, 1, 71, 64}, {1, 3, 50, 48}, {1, 1, 40, 32}};
    for (const auto& s : sizes) {
      check_case(isa, s[0], s[1], s[2], s[3], 0, false, rng);
      check_case(isa, s[0], s[1], s[2], s[3], 3, true, rng);
    }
    check_all_masked(isa);
    check_half(isa, rng);
  });
}
