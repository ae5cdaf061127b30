// C++ unit test of core/upsample_add (upsample_add and hr_fuse, forward and backward) against
// naive loops, NCHW and NHWC, float and double, odd sizes and factors. Runs under ASan/UBSan.
#include <cmath>
#include <random>
#include <vector>

#include "core/upsample_add.h"
#include "test_util.h"

using namespace fastpose::core;

namespace {

// index of (n, c, h, w) in a tensor of (N, C, H, W) stored NCHW or NHWC
int64_t at(bool nhwc, int64_t N, int64_t C, int64_t H, int64_t W, int64_t n, int64_t c, int64_t h, int64_t w) {
  (void)N;
  return nhwc ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
}

void check_upsample_add(bool nhwc, int64_t N, int64_t C, int64_t Hl, int64_t Wl, int64_t sh, int64_t sw,
                        std::mt19937& rng) {
  std::normal_distribution<double> nd;
  const int64_t H = Hl * sh, W = Wl * sw;
  std::vector<double> low(N * C * Hl * Wl), skip(N * C * H * W), out(skip.size(), NAN), grad(skip.size()),
      gl(low.size(), NAN);
  for (auto& v : low) v = nd(rng);
  for (auto& v : skip) v = nd(rng);
  for (auto& v : grad) v = nd(rng);
  MergeShape s;
  s.type = ElemType::F64;
  s.nhwc = nhwc;
  s.N = N;
  s.C = C;
  s.H = H;
  s.W = W;
  MergeInput in;
  in.data = low.data();
  in.H = Hl;
  in.W = Wl;
  in.sh = sh;
  in.sw = sw;
  const int64_t units = upsample_add_units(s, in);
  upsample_add_forward(s, in, skip.data(), out.data(), 0, units / 2);
  upsample_add_forward(s, in, skip.data(), out.data(), units / 2, units);
  upsample_add_backward(s, in, grad.data(), gl.data(), 0, units);
  std::vector<double> ref_gl(low.size(), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          const int64_t o = at(nhwc, N, C, H, W, n, c, h, w), l = at(nhwc, N, C, Hl, Wl, n, c, h / sh, w / sw);
          FP_CHECK(out[o] == skip[o] + low[l]);
          ref_gl[l] += grad[o];
        }
  for (size_t i = 0; i < gl.size(); ++i) FP_CHECK(std::fabs(gl[i] - ref_gl[i]) < 1e-12);
}

void check_hr_fuse(bool nhwc, bool relu, std::mt19937& rng) {
  std::normal_distribution<float> nd;
  const int64_t N = 2, C = 3, H = 12, W = 10;
  const int64_t f[3][2] = {{1, 1}, {2, 5}, {4, 2}};
  std::vector<std::vector<float>> xs(3);
  std::vector<MergeInput> in(3);
  for (int j = 0; j < 3; ++j) {
    in[j].H = H / f[j][0];
    in[j].W = W / f[j][1];
    in[j].sh = f[j][0];
    in[j].sw = f[j][1];
    xs[j].resize(N * C * in[j].H * in[j].W);
    for (auto& v : xs[j]) v = nd(rng);
    in[j].data = xs[j].data();
  }
  MergeShape s;
  s.nhwc = nhwc;
  s.N = N;
  s.C = C;
  s.H = H;
  s.W = W;
  std::vector<float> out(N * C * H * W, NAN), grad(out.size());
  for (auto& v : grad) v = nd(rng);
  const int64_t units = hr_fuse_units(s, in.data(), 3);
  hr_fuse_forward(s, in.data(), 3, relu, out.data(), 0, units);
  std::vector<std::vector<float>> g(3);
  std::vector<void*> gp(3);
  for (int j = 0; j < 3; ++j) {
    g[j].assign(xs[j].size(), NAN);
    gp[j] = g[j].data();
  }
  hr_fuse_backward(s, in.data(), 3, relu, grad.data(), out.data(), gp.data(), 0, units);
  std::vector<std::vector<double>> rg(3);
  for (int j = 0; j < 3; ++j) rg[j].assign(xs[j].size(), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          double v = 0;
          int64_t idx[3];
          for (int j = 0; j < 3; ++j) {
            idx[j] = at(nhwc, N, C, in[j].H, in[j].W, n, c, h / in[j].sh, w / in[j].sw);
            v += xs[j][idx[j]];
          }
          if (relu && v < 0) v = 0;
          const int64_t o = at(nhwc, N, C, H, W, n, c, h, w);
          FP_CHECK(std::fabs(out[o] - v) < 1e-5);
          const double gv = (!relu || out[o] > 0) ? grad[o] : 0.0;
          for (int j = 0; j < 3; ++j) rg[j][idx[j]] += gv;
        }
  for (int j = 0; j < 3; ++j)
    for (size_t i = 0; i < g[j].size(); ++i) FP_CHECK(std::fabs(g[j][i] - rg[j][i]) < 1e-4);
}

}  // namespace

int main() {
  // No ISA-specific code here: the same test for every FASTPOSE_ISA value.
  return run_isa_test("upsample_add", [](Isa) {
    std::mt19937 rng(99);
    for (bool nhwc : {false, true}) {
      check_upsample_add(nhwc, 2, 3, 4, 5, 2, 2, rng);
      check_upsample_add(nhwc, 1, 1, 1, 1, 1, 1, rng);
      check_upsample_add(nhwc, 1, 5, 3, 7, 3, 1, rng);
      check_upsample_add(nhwc, 2, 2, 1, 1, 4, 6, rng);
      for (bool relu : {true, false}) check_hr_fuse(nhwc, relu, rng);
    }
  });
}
