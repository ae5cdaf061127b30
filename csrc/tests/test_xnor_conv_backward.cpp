// The bit passes of the straight-through backward (core/xnor_conv_backward.h) against scalar
// definitions, for every ISA path, odd channel counts, both layouts and float32 / float64.
#include <cmath>
#include <random>
#include <vector>

#include "core/xnor_conv_backward.h"
#include "test_util.h"

using namespace fastpose::core;

namespace {

template <class T>
void check_layout(Isa isa, bool nhwc, int64_t N, int64_t C, int64_t H, int64_t W, int64_t ph, int64_t pw,
                  std::mt19937& rng) {
  std::normal_distribution<double> nd(0.0, 1.5);
  const ElemType et = sizeof(T) == 8 ? ElemType::F64 : ElemType::F32;
  // strides of an (N, C, H, W) tensor, NCHW or NHWC in memory
  auto strides = [&](int64_t h, int64_t w, int64_t* s) {
    if (nhwc) {
      s[0] = h * w * C, s[1] = 1, s[2] = w * C, s[3] = C;
    } else {
      s[0] = C * h * w, s[1] = h * w, s[2] = w, s[3] = 1;
    }
  };
  const int64_t n_el = N * C * H * W, CW = xnor_words(C);
  std::vector<T> x(n_el);
  for (auto& v : x) v = static_cast<T>(nd(rng));
  if (n_el >= 5) x[0] = T(1), x[1] = T(-1), x[2] = T(-0.0), x[3] = std::nan(""), x[4] = T(1.0000001);
  int64_t xs[4];
  strides(H, W, xs);
  PackSource src{x.data(), et, N, C, H, W, xs[0], xs[1], xs[2], xs[3]};
  std::vector<uint64_t> sign(N * H * W * CW, 7), pass(N * H * W * CW, 7);
  ste_pack(src, sign.data(), pass.data(), 0, N * H, isa);
  auto at = [&](const std::vector<T>& v, const int64_t* s, int64_t n, int64_t c, int64_t h, int64_t w) {
    return v[n * s[0] + c * s[1] + h * s[2] + w * s[3]];
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w)
        for (int64_t k = 0; k < CW; ++k) {
          uint64_t es = 0, ep = 0;
          for (int64_t c = 64 * k; c < std::min<int64_t>(C, 64 * k + 64); ++c) {
            const T v = at(x, xs, n, c, h, w);
            if (v >= T(0)) es |= uint64_t(1) << (c - 64 * k);
            if (v <= T(1) && v >= T(-1)) ep |= uint64_t(1) << (c - 64 * k);
          }
          const int64_t i = ((n * H + h) * W + w) * CW + k;
          FP_CHECK(sign[i] == es);
          FP_CHECK(pass[i] == ep);
        }
  // sign unpack with a -1 border
  const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw;
  std::vector<T> u(N * C * Hp * Wp, T(5));
  int64_t us[4];
  strides(Hp, Wp, us);
  UnpackTarget t{u.data(), et, N, C, Hp, Wp, us[0], us[1], us[2], us[3], ph, pw, -1.0};
  sign_unpack(sign.data(), CW, t, 0, N * Hp, isa);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < Hp; ++h)
        for (int64_t w = 0; w < Wp; ++w) {
          const bool inside = h >= ph && h < ph + H && w >= pw && w < pw + W;
          const T e = !inside ? T(-1) : (at(x, xs, n, c, h - ph, w - pw) >= T(0) ? T(1) : T(-1));
          FP_CHECK(at(u, us, n, c, h, w) == e);
        }
  // window on a padded gradient, cropped into a fresh output
  std::vector<T> g(N * C * Hp * Wp), out(n_el, T(9));
  for (auto& v : g) v = static_cast<T>(nd(rng));
  MaskProblem mp{g.data(), us[0], us[1], us[2], us[3], ph, pw, out.data(), xs[0], xs[1], xs[2], xs[3],
                 et, N, C, H, W, CW, pass.data()};
  ste_mask(mp, 0, N * H, isa);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          const T v = at(x, xs, n, c, h, w);
          const T e = (v <= T(1) && v >= T(-1)) ? at(g, us, n, c, h + ph, w + pw) : T(0);
          FP_CHECK(at(out, xs, n, c, h, w) == e);
        }
}

template <class T>
void check_chain(std::mt19937& rng) {
  std::normal_distribution<double> nd(0.0, 1.0);
  const int64_t Cout = 5, Cin = 13, KH = 3, KW = 2, K = Cin * KH * KW;
  std::vector<T> G(Cout * K), w(Cout * K), alpha(Cout), gw(Cout * K);
  for (auto& v : G) v = static_cast<T>(nd(rng));
  for (auto& v : w) v = static_cast<T>(nd(rng));
  w[3] = T(0);
  for (int64_t o = 0; o < Cout; ++o) alpha[o] = static_cast<T>(0.5 + 0.1 * o);
  // G laid out as (Cout, KH, KW, Cin) (a channels_last weight gradient)
  std::vector<T> Gl(Cout * K);
  for (int64_t o = 0; o < Cout; ++o)
    for (int64_t ci = 0; ci < Cin; ++ci)
      for (int64_t kh = 0; kh < KH; ++kh)
        for (int64_t kw = 0; kw < KW; ++kw)
          Gl[o * K + (kh * KW + kw) * Cin + ci] = G[o * K + (ci * KH + kh) * KW + kw];
  ste_weight_chain<T>(Gl.data(), K, 1, KW * Cin, Cin, w.data(), alpha.data(), Cin, KH, KW, gw.data(), K, KH * KW, KW, 1, 0,
                      Cout);
  for (int64_t o = 0; o < Cout; ++o) {
    double dot = 0;
    for (int64_t k = 0; k < K; ++k) dot += double(G[o * K + k]) * double(w[o * K + k]);
    for (int64_t k = 0; k < K; ++k) {
      const double wv = w[o * K + k], sg = wv > 0 ? 1 : (wv < 0 ? -1 : 0);
      const double e = alpha[o] * double(G[o * K + k]) + sg * dot / K;
      FP_CHECK(std::fabs(gw[o * K + k] - e) <= (sizeof(T) == 8 ? 1e-12 : 1e-5) * (1 + std::fabs(e)));
    }
  }
  ste_weight_chain<T>(Gl.data(), K, 1, KW * Cin, Cin, w.data(), nullptr, Cin, KH, KW, gw.data(), K, KH * KW, KW, 1, 0,
                      Cout);
  for (int64_t o = 0; o < Cout; ++o)
    for (int64_t k = 0; k < K; ++k) FP_CHECK(gw[o * K + k] == G[o * K + k]);
}

}  // namespace

int main() {
  return run_isa_test("xnor_conv_backward", [](Isa isa) {
    std::mt19937 rng(7);
    for (bool nhwc : {false, true})
      for (int64_t C : {1, 5, 16, 17, 64, 70, 130}) {
        check_layout<float>(isa, nhwc, 2, C, 3, 4, 1, 1, rng);
        check_layout<double>(isa, nhwc, 1, C, 4, 3, 0, 2, rng);
      }
    check_chain<float>(rng);
    check_chain<double>(rng);
  });
}
