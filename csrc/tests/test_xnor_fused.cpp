// Unit tests of core/xnor_fused under the ISA forced by FASTPOSE_ISA: the BatchNorm-folded pack and the
// fused epilogue (a channel slice of a larger NHWC / NCHW buffer, residual, packed signs of the next
// folded BatchNorm) against direct loops with the documented two-rounding arithmetic.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "core/xnor_conv.h"
#include "tests/test_util.h"

using namespace fastpose::core;

namespace {

std::mt19937 rng(4321);

// (x * s) + t with each operation rounded to float on its own.
bool bn_sign(float x, float s, float t) {
  volatile float u = x * s;
  const float v = u + t;
  return v >= 0.f;
}

void test_pack_affine(Isa isa) {
  std::normal_distribution<float> nd;
  for (int64_t C : {1, 17, 64, 65, 130})
    for (bool nhwc : {false, true}) {
      const int64_t N = 2, H = 3, W = 5, CW = xnor_words(C);
      std::vector<float> x(N * C * H * W), s(C), t(C);
      for (auto& v : x) v = nd(rng);
      for (auto& v : s) v = nd(rng);
      for (auto& v : t) v = nd(rng);
      x[1] = NAN;
      t[0] = -x[0] * s[0];  // a zero after the BN for element 0 (+1 either sign of the rounding)
      const int64_t sn = C * H * W, sc = nhwc ? 1 : H * W, sh = nhwc ? W * C : W, sw = nhwc ? C : 1;
      PackSource src{x.data(), ElemType::F32, N, C, H, W, sn, sc, sh, sw};
      std::vector<uint64_t> got(N * H * W * CW, ~uint64_t(0));
      binarize_pack_affine(src, s.data(), t.data(), got.data(), 0, N * H, isa);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w)
            for (int64_t k = 0; k < CW; ++k) {
              uint64_t want = 0;
              for (int64_t c = 64 * k; c < std::min<int64_t>(C, 64 * k + 64); ++c)
                if (bn_sign(x[n * sn + c * sc + h * sh + w * sw], s[c], t[c])) want |= uint64_t(1) << (c % 64);
              FP_CHECK(got[((n * H + h) * W + w) * CW + k] == want);
            }
    }
}

void test_fused_conv(Isa isa) {
  std::normal_distribution<float> nd;
  struct Case {
    int64_t N, Cin, Cout, H, W;
  };
  // Every output form the epilogues have: packed signs + residual (the HPM stage), plain values with
  // bias, folded BN and pad_value = -1 borders (the xnor_conv2d / xnor_conv2d_packed forms), both layouts.
  for (const Case& c : {Case{1, 70, 67, 5, 6}, Case{2, 64, 128, 4, 17}, Case{1, 3, 16, 3, 3}, Case{1, 130, 200, 2, 9},
                        Case{1, 64, 48, 3, 37}, Case{1, 70, 67, 7, 12}, Case{2, 64, 128, 6, 16}})
    for (int form = 0; form < 2; ++form)
    for (bool nhwc : {false, true}) {
      const bool packed = form == 0;
      const int pad_value = packed ? 0 : -1;
      const int64_t K = 3, Ho = c.H, Wo = c.W, CW = xnor_words(c.Cin), CWo = xnor_words(c.Cout);
      const int64_t Ct = c.Cout + 5, off = 2;  // out / residual: channels [2, 2 + Cout) of Ct
      std::vector<uint64_t> xp(c.N * c.H * c.W * CW), wp(c.Cout * K * K * CW);
      std::uniform_int_distribution<uint64_t> bits;
      for (auto& v : xp) v = bits(rng);
      for (auto& v : wp) v = bits(rng);
      const uint64_t last = c.Cin % 64 ? (uint64_t(1) << (c.Cin % 64)) - 1 : ~uint64_t(0);
      for (size_t i = 0; i < xp.size(); ++i)
        if (i % CW == size_t(CW - 1)) xp[i] &= last;
      for (size_t i = 0; i < wp.size(); ++i)
        if (i % CW == size_t(CW - 1)) wp[i] &= last;
      std::vector<float> alpha(c.Cout), ns(c.Cout), nt(c.Cout), out(c.N * Ct * Ho * Wo, 7.f), res(out.size());
      std::vector<float> bias(c.Cout), bs(c.Cout), bt(c.Cout);
      for (auto& v : alpha) v = std::fabs(nd(rng));
      for (auto& v : bias) v = nd(rng);
      for (auto& v : bs) v = nd(rng);
      for (auto& v : bt) v = nd(rng);
      for (auto& v : ns) v = nd(rng);
      for (auto& v : nt) v = nd(rng);
      for (auto& v : res) v = nd(rng);
      const int64_t st[4] = {Ct * Ho * Wo, nhwc ? 1 : Ho * Wo, nhwc ? Wo * Ct : Wo, nhwc ? Ct : 1};
      std::vector<uint64_t> op(c.N * Ho * Wo * CWo, ~uint64_t(0));
      XnorConvProblem p{};
      p.x = xp.data(), p.w = wp.data();
      p.N = c.N, p.Cin = c.Cin, p.H = c.H, p.W = c.W, p.Cout = c.Cout, p.KH = K, p.KW = K;
      p.sh = p.sw = 1, p.ph = p.pw = 1, p.dh = p.dw = 1, p.Ho = Ho, p.Wo = Wo, p.CW = CW;
      p.pad_value = pad_value, p.wpop = nullptr, p.alpha = alpha.data(), p.bias = packed ? nullptr : bias.data();
      p.bn_scale = packed ? nullptr : bs.data(), p.bn_shift = packed ? nullptr : bt.data();
      p.out = out.data() + off * st[1], p.out_type = ElemType::F32, p.out_nhwc = false;
      p.out_strided = true;
      p.residual = res.data() + off * st[1];
      for (int i = 0; i < 4; ++i) p.out_strides[i] = p.res_strides[i] = st[i];
      if (packed) p.next_scale = ns.data(), p.next_shift = nt.data(), p.out_packed = op.data();
      p.fused_isa = isa;
      p.cout_block = 64;
      // Row pairs through the mirrored ring of prepared rows: what xnor_conv_row_pairs_fit picks there
      // (AVX2, 9-16 columns), set by hand for every path and width (the kernel pairs 1-16 columns on AVX2).
      FP_CHECK(xnor_conv_row_pairs_fit(p, isa) == (isa == Isa::Avx2 && Ho >= 2 && Wo > 8 && Wo <= 16));
      if (Ho >= 2) {
        p.row_pairs = true;
        xnor_conv2d_forward(p, 0, xnor_conv_units(p), isa);
        const std::vector<float> out_pairs = out;
        const std::vector<uint64_t> op_pairs = op;
        std::fill(out.begin(), out.end(), 7.f);
        std::fill(op.begin(), op.end(), ~uint64_t(0));
        p.row_pairs = false;
        xnor_conv2d_forward(p, 0, xnor_conv_units(p), isa);
        FP_CHECK(out == out_pairs && op == op_pairs);
      } else {
        xnor_conv2d_forward(p, 0, xnor_conv_units(p), isa);
      }
      for (int64_t n = 0; n < c.N; ++n)
        for (int64_t oh = 0; oh < Ho; ++oh)
          for (int64_t ow = 0; ow < Wo; ++ow) {
            std::vector<uint64_t> want(CWo, 0);
            for (int64_t o = 0; o < c.Cout; ++o) {
              int32_t dot = 0;
              for (int64_t i = 0; i < K; ++i)
                for (int64_t j = 0; j < K; ++j) {
                  const int64_t ih = oh - 1 + i, iw = ow - 1 + j;
                  const bool inside = ih >= 0 && ih < c.H && iw >= 0 && iw < c.W;
                  if (!inside && pad_value == 0) continue;
                  for (int64_t ci = 0; ci < c.Cin; ++ci) {
                    const int xb = inside ? (xp[((n * c.H + ih) * c.W + iw) * CW + ci / 64] >> (ci % 64)) & 1 : 0;
                    const int wb = (wp[((o * K + i) * K + j) * CW + ci / 64] >> (ci % 64)) & 1;
                    dot += xb == wb ? 1 : -1;
                  }
                }
              volatile float v = static_cast<float>(dot) * alpha[o];
              if (!packed) {
                v = v + bias[o];
                v = v * bs[o];
                v = v + bt[o];
              }
              if (bn_sign(v, ns[o], nt[o])) want[o / 64] |= uint64_t(1) << (o % 64);
              const int64_t idx = n * st[0] + (off + o) * st[1] + oh * st[2] + ow * st[3];
              const float ref = v + res[idx];
              FP_CHECK(out[idx] == ref);
            }
            if (packed)
              for (int64_t k = 0; k < CWo; ++k) FP_CHECK(op[((n * Ho + oh) * Wo + ow) * CWo + k] == want[k]);
            for (int64_t o = 0; o < Ct; ++o)  // channels outside the slice untouched
              if (o < off || o >= off + c.Cout) FP_CHECK(out[n * st[0] + o * st[1] + oh * st[2] + ow * st[3]] == 7.f);
          }
    }
}

}  // namespace

int main() {
  return run_isa_test("xnor_fused", [](Isa isa) {
    test_pack_affine(isa);
    test_fused_conv(isa);
  });
}
