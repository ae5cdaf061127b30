// Unit tests of core/xnor_conv under the ISA forced by FASTPOSE_ISA: bit packing against a naive loop,
// the popcount GEMM against naive popcounts, and the whole convolution (integer dots and the exact
// epilogue) against a direct +-1 convolution, for odd channel counts, strides, dilations, both paddings.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "core/xnor_conv.h"
#include "tests/test_util.h"

using namespace fastpose::core;

namespace {

std::mt19937 rng(1234);

int sgn(float v) { return v >= 0.f ? 1 : -1; }

std::vector<uint64_t> pack_naive(const std::vector<float>& x, int64_t N, int64_t C, int64_t H, int64_t W) {
  const int64_t CW = xnor_words(C);
  std::vector<uint64_t> out(N * H * W * CW, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w)
          if (x[((n * C + c) * H + h) * W + w] >= 0.f)
            out[((n * H + h) * W + w) * CW + c / 64] |= uint64_t(1) << (c % 64);
  return out;
}

void test_pack(Isa isa) {
  for (int64_t C : {1, 3, 31, 64, 65, 100, 257})
    for (int64_t W : {1, 7, 8, 13, 16, 17, 40, C == 3 ? 1030 : 2}) {  // pixel tiles of 8 / 16 and passes of 1024
      const int64_t N = 2, H = 3;
      std::vector<float> x(N * C * H * W);
      std::normal_distribution<float> nd;
      for (auto& v : x) v = nd(rng);
      x[0] = -0.0f;
      if (x.size() > 1) x[1] = NAN;
      const auto ref = pack_naive(x, N, C, H, W);
      // NCHW
      std::vector<uint64_t> got(ref.size(), 0xdeadbeef);
      PackSource s{x.data(), ElemType::F32, N, C, H, W, C * H * W, H * W, W, 1};
      binarize_pack(s, got.data(), 0, N * H, isa);
      FP_CHECK(got == ref);
      // NHWC copy of the same values
      std::vector<float> xl(x.size());
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t w = 0; w < W; ++w) xl[((n * H + h) * W + w) * C + c] = x[((n * C + c) * H + h) * W + w];
      std::vector<uint64_t> got2(ref.size(), 0);
      PackSource s2{xl.data(), ElemType::F32, N, C, H, W, H * W * C, 1, W * C, C};
      binarize_pack(s2, got2.data(), 0, N * H, isa);
      FP_CHECK(got2 == ref);
    }
}

// ATen's CPU sum of |row| over L-lane vectors, one scalar lane at a time (pack_weight_abs_f32's sums
// must match it; the Python tests compare against ATen itself).
float aten_sum_scalar(const float* row, int64_t n, int L) {
  const int64_t nv = n / L, ng = nv / 4;
  const int64_t cl = ng <= 2 ? 1 : 64 - __builtin_clzll(uint64_t(ng - 1));
  const int64_t p = std::max<int64_t>(4, cl / 4), step = int64_t(1) << p;
  std::vector<float> lane_sum(L);
  for (int l = 0; l < L; ++l) {
    float acc[4][4] = {};
    auto at = [&](int64_t v) { return std::fabs(row[v * L + l]); };
    int64_t i = 0;
    while (i + step <= ng) {
      for (int64_t j = 0; j < step; ++j, ++i)
        for (int k = 0; k < 4; ++k) acc[0][k] += at(i * 4 + k);
      for (int lv = 1; lv < 4; ++lv) {
        for (int k = 0; k < 4; ++k) acc[lv][k] += acc[lv - 1][k], acc[lv - 1][k] = 0.f;
        if ((i & ((step - 1) << (lv * p))) != 0) break;
      }
    }
    for (; i < ng; ++i)
      for (int k = 0; k < 4; ++k) acc[0][k] += at(i * 4 + k);
    for (int lv = 1; lv < 4; ++lv)
      for (int k = 0; k < 4; ++k) acc[0][k] += acc[lv][k];
    for (int64_t v = ng * 4; v < nv; ++v) acc[0][0] += at(v);
    for (int k = 1; k < 4; ++k) acc[0][0] += acc[0][k];
    lane_sum[l] = acc[0][0];
  }
  float total = 0.f;
  for (int64_t e = nv * L; e < n; ++e) total += std::fabs(row[e]);
  for (int l = 0; l < L; ++l) total += lane_sum[l];
  return 0.f + total;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

// The one-pass weight pack of xnor_conv2d's float path: the words of pack_naive on (Cout, Cin, 1, K) and
// the sums of |w| in ATen's order for both lane counts, for channel counts around the 64-bit word and the
// tap counts of 1x1 .. 7x7 (both tap gathers where the CPU has the bit shuffle), and long rows that reach
// the cascade's carries.
// The AVX2 form is checked on every CPU with AVX2 and BMI2, also where its pext is slow (and xnor_conv2d
// does not use it).
void test_pack_weight(Isa isa) {
  const bool avx2 = isa == Isa::Avx2;
  if (isa == Isa::Portable || !__builtin_cpu_supports("bmi2") ||
      (!avx2 && !pack_weight_abs_f32_available(9, isa))) {
    std::printf("test_pack_weight: skipped (needs AVX2 or AVX-512, and BMI2)\n");
    return;
  }
  const auto pack = [&](const float* w, int64_t Cin, int64_t K, uint64_t* dst, float* sums, int L, int64_t b,
                        int64_t e, int32_t* pop, bool shuffle) {
    if (avx2)
      pack_weight_abs_f32_avx2(w, Cin, K, dst, sums, L, b, e, pop);
    else
      pack_weight_abs_f32_avx512(w, Cin, K, dst, sums, L, b, e, pop, shuffle);
  };
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int64_t Cin : {1, 3, 63, 64, 65, 128, 200})
    for (int64_t K : {1, 2, 3, 9, 25, 49}) shapes.push_back({Cin, K});
  for (int64_t Cin : {1000, 9000, 70000}) shapes.push_back({Cin, 1});
  std::uniform_int_distribution<int> ex(-10, 10);
  for (auto [Cin, K] : shapes)
    for (int mode = 0; mode < 4; ++mode) {  // lanes 8 / 16, pext / bit-shuffle tap gather
      const int L = mode % 2 ? 16 : 8;
      const bool shuffle = mode >= 2;
      if (shuffle && (avx2 || !pack_weight_shuffle_available())) continue;
      const int64_t Cout = 5, n = Cin * K;
      std::vector<float> w(Cout * n);
      std::normal_distribution<float> nd;
      for (auto& v : w) v = std::ldexp(nd(rng), ex(rng));
      w[0] = -0.0f;
      if (w.size() > 2) w[2] = NAN;
      const auto ref = pack_naive(w, Cout, Cin, 1, K);
      // Channels [0, 2) and [3, 5) with sums, [2, 3) without: ranges that start past 0 and a null abs_sum.
      std::vector<uint64_t> got(ref.size(), 0xdeadbeef);
      std::vector<float> sums(Cout, 7.f);
      std::vector<int32_t> pop(Cout * K, -7), pop_ref(Cout * K);
      pack(w.data(), Cin, K, got.data(), sums.data(), L, 0, 2, pop.data(), shuffle);
      pack(w.data(), Cin, K, got.data(), nullptr, L, 2, 3, nullptr, shuffle);
      pack(w.data(), Cin, K, got.data(), sums.data(), L, 3, Cout, pop.data(), shuffle);
      FP_CHECK(got == ref);
      xnor_weight_popcounts(ref.data(), Cout * K, xnor_words(Cin), pop_ref.data());
      for (int64_t t = 0; t < Cout * K; ++t) FP_CHECK(pop[t] == (t / K == 2 ? -7 : pop_ref[t]));
      for (int64_t co = 0; co < Cout; ++co) {
        if (co == 2)
          FP_CHECK(sums[co] == 7.f);  // that call wrote no sum
        else if (co == 0 && n > 2)
          FP_CHECK(std::isnan(sums[co]));
        else if (n >= L)
          FP_CHECK(same_bits(sums[co], aten_sum_scalar(w.data() + co * n, n, L)));
      }
    }
}

// mode 0: random words; 1: x all ones, w all zeros (every popcount 64: the largest per-byte and
// 16-bit counts of the AVX2 kernel); 2: x and w equal (all zero).
void gemm_case(Isa isa, int nk, int npix, int nout, int mode) {
  std::uniform_int_distribution<uint64_t> ud;
  // x rows of npix words at scattered offsets; w rows of wstride words, taps at scattered offsets.
  const int64_t xlen = 3 * nk + npix + 8, wstride = 2 * nk + 1;
  std::vector<uint64_t> x(xlen), w(nout * wstride);
  for (auto& v : x) v = mode == 0 ? ud(rng) : mode == 1 ? ~uint64_t(0) : 0x5a5a5a5a5a5a5a5aull;
  for (auto& v : w) v = mode == 0 ? ud(rng) : mode == 1 ? 0 : 0x5a5a5a5a5a5a5a5aull;
  std::vector<int64_t> xoff(nk), woff(nk);
  for (int k = 0; k < nk; ++k) xoff[k] = (7 * k) % (3 * nk + 1), woff[k] = (5 * k + 1) % wstride;
  const int64_t ss = npix + 3;
  std::vector<int32_t> S(nout * ss, -7);
  xnor_gemm_block(x.data(), xoff.data(), nk, w.data(), wstride, woff.data(), nout, npix, S.data(), ss, isa);
  for (int o = 0; o < nout; ++o)
    for (int64_t q = 0; q < ss; ++q) {
      if (q >= npix) {
        FP_CHECK(S[o * ss + q] == -7);  // nothing written past npix
        continue;
      }
      int32_t e = 0;
      for (int k = 0; k < nk; ++k) e += __builtin_popcountll(x[xoff[k] + q] ^ w[o * wstride + woff[k]]);
      FP_CHECK(S[o * ss + q] == e);
    }
  if (isa == Isa::Avx2) {
    // Prebuilt table offsets (xnor_gemm_tables_avx2 over the taps' words in step order, at a channel
    // stride past their end): the same sums as the offsets built inside the call.
    std::vector<uint64_t> wc(nout * nk);
    for (int o = 0; o < nout; ++o)
      for (int k = 0; k < nk; ++k) wc[o * nk + k] = w[o * wstride + woff[k]];
    const int64_t tstride = 8 * nk + 24;
    std::vector<uint16_t> tab(nout * tstride, 0xffff);
    xnor_gemm_tables_avx2(wc.data(), nk, nout, nk, tab.data(), tstride);
    std::vector<int32_t> S2(nout * ss, -7);
    xnor_gemm_block(x.data(), xoff.data(), nk, w.data(), wstride, woff.data(), nout, npix, S2.data(), ss, isa,
                    tab.data(), tstride);
    FP_CHECK(S2 == S);
  }
}

void test_gemm_block(Isa isa) {
  // K lengths around the AVX2 kernel's drains (every 7 steps) and the 16-bit sum chunks (2044 steps);
  // pixel counts with half-full 16-pixel groups and 1- or 2-group blocks; channel remainders of the
  // 4- and 8-channel blocks.
  for (int nk : {1, 2, 3, 6, 7, 8, 9, 14, 15, 31, 32, 33, 64, 100})
    for (int npix : {8, 16, 24, 32, 40, 48, 64, 72})
      for (int nout : {1, 3, 4, 5, 7, 8, 9, 13}) gemm_case(isa, nk, npix, nout, 0);
  for (int nk : {2043, 2044, 2045, 4089, 4100})
    for (int mode : {0, 1, 2}) gemm_case(isa, nk, 24, 5, mode);
  for (int mode : {1, 2}) gemm_case(isa, 63, 40, 9, mode);
}

// The active ISA's tap popcounts against a plain per-word count, over the word counts with a vector
// tree (1, 2, 4), the masked sweeps around them, and tap counts with and without a tail of < 8.
void test_weight_popcounts() {
  std::mt19937_64 rng(11);
  for (int64_t CW : {1, 2, 3, 4, 5, 7, 8, 9, 16, 17})
    for (int64_t taps : {0, 1, 7, 8, 9, 15, 16, 17, 63, 1152 + 3}) {
      std::vector<uint64_t> w(taps * CW);
      for (auto& v : w) v = rng();
      if (!w.empty()) w[0] = ~uint64_t(0), w.back() = 0;
      std::vector<int32_t> got(taps + 1, -3), ref(taps);
      for (int64_t t = 0; t < taps; ++t) {
        int32_t c = 0;
        for (int64_t i = 0; i < CW; ++i)
          for (uint64_t x = w[t * CW + i]; x; x &= x - 1) ++c;
        ref[t] = c;
      }
      xnor_weight_popcounts(w.data(), taps, CW, got.data());
      for (int64_t t = 0; t < taps; ++t) FP_CHECK(got[t] == ref[t]);
      FP_CHECK(got[taps] == -3);  // nothing written past the last tap
    }
}

void test_peak(Isa isa) { FP_CHECK(xnor_popcount_peak_loop(100, isa) > 0); }

struct Case {
  int64_t N, Cin, Cout, H, W, K, s, p, d;
};

void test_conv(Isa isa) {
  std::vector<Case> cases = {{2, 3, 5, 7, 6, 3, 1, 1, 1},    {1, 65, 7, 9, 11, 3, 2, 1, 1}, {1, 100, 9, 8, 8, 5, 1, 2, 2},
                             {1, 257, 4, 5, 6, 3, 1, 1, 1},  {1, 33, 6, 1, 1, 1, 1, 0, 1},  {1, 31, 3, 4, 4, 7, 1, 3, 1},
                             {2, 64, 9, 10, 12, 3, 1, 1, 1}, {1, 128, 5, 6, 9, 3, 3, 2, 2}, {1, 1, 2, 3, 3, 3, 1, 3, 1},
                             // the prepared layout's edge cases: K = taps x words of every length, lane
                             // tails (Wo not a multiple of 8), W < kernel, strides and dilations
                             {1, 63, 6, 5, 17, 3, 1, 1, 1},  {1, 127, 5, 4, 9, 5, 2, 2, 1}, {1, 200, 7, 6, 19, 3, 1, 1, 2},
                             {1, 256, 9, 5, 33, 3, 1, 1, 1}, {1, 300, 5, 4, 8, 1, 1, 0, 1}, {1, 64, 4, 3, 2, 5, 1, 2, 1},
                             {2, 3, 5, 2, 1, 3, 2, 1, 1},    {1, 65, 4, 7, 7, 5, 2, 0, 2},  {1, 128, 3, 1, 1, 3, 1, 2, 1},
                             // row pairs (1-16 output columns): odd / even counts of top border rows,
                             // stride 2, dilation 2 with pad 2, odd Ho, channel remainders of the 4- and
                             // 8-channel blocks, 8-column rows (two per 16-pixel group)
                             {1, 130, 9, 9, 16, 3, 1, 1, 1}, {1, 64, 13, 8, 14, 3, 1, 0, 1}, {1, 96, 7, 12, 31, 3, 2, 1, 1},
                             {1, 40, 5, 10, 13, 3, 1, 2, 2}, {2, 200, 6, 5, 9, 1, 1, 0, 1}, {1, 70, 9, 9, 8, 3, 1, 1, 1},
                             {2, 33, 13, 6, 5, 3, 1, 1, 1},  {1, 128, 7, 9, 7, 3, 2, 1, 1}};
  std::normal_distribution<float> nd;
  for (const Case& c : cases)
    for (int pad_value : {0, -1}) {
      std::vector<float> x(c.N * c.Cin * c.H * c.W), w(c.Cout * c.Cin * c.K * c.K), alpha(c.Cout), bias(c.Cout);
      for (auto& v : x) v = nd(rng);
      for (auto& v : w) v = nd(rng);
      for (auto& v : alpha) v = std::fabs(nd(rng));
      for (auto& v : bias) v = nd(rng);
      const auto xp = pack_naive(x, c.N, c.Cin, c.H, c.W), wp = pack_naive(w, c.Cout, c.Cin, c.K, c.K);
      const int64_t Ho = (c.H + 2 * c.p - c.d * (c.K - 1) - 1) / c.s + 1;
      const int64_t Wo = (c.W + 2 * c.p - c.d * (c.K - 1) - 1) / c.s + 1;
      const int64_t CW = xnor_words(c.Cin), KT = c.K * c.K;
      std::vector<int32_t> wpop(c.Cout * KT);
      xnor_weight_popcounts(wp.data(), c.Cout * KT, CW, wpop.data());
      for (int variant = 0; variant < 5; ++variant) {
        // 0: NCHW, own row preparation, no wpop; 1: NHWC; 2: NCHW from a prepared input; 3: that in row
        // pairs where they fit (AVX2, 1-16 output columns); 4: own row preparation (the mirrored ring) in
        // row pairs
        const bool nhwc = variant == 1;
        std::vector<float> out(c.N * c.Cout * Ho * Wo, NAN);
        XnorConvProblem p{};
        p.x = xp.data(), p.w = wp.data();
        p.N = c.N, p.Cin = c.Cin, p.H = c.H, p.W = c.W, p.Cout = c.Cout, p.KH = c.K, p.KW = c.K;
        p.sh = p.sw = c.s, p.ph = p.pw = c.p, p.dh = p.dw = c.d, p.Ho = Ho, p.Wo = Wo, p.CW = CW;
        p.pad_value = pad_value, p.wpop = variant == 0 ? nullptr : wpop.data();
        p.alpha = alpha.data(), p.bias = bias.data(), p.bn_scale = nullptr, p.bn_shift = nullptr;
        p.out = out.data(), p.out_type = ElemType::F32, p.out_nhwc = nhwc, p.cout_block = 4;
        std::vector<uint64_t> xt;
        if (variant == 4) {
          // set by hand on every path (units of two rows; the paired kernel where AVX2 can run it), also
          // for the 8-column rows that xnor_conv_row_pairs_fit leaves out of the rings
          FP_CHECK(!xnor_conv_row_pairs_fit(p, isa) || (isa == Isa::Avx2 && Wo > 8 && Wo <= 16));
          if (Ho < 2) continue;
          p.row_pairs = true;
        }
        if (variant == 2 || variant == 3) {
          xt.assign(c.N * c.H * xnor_conv_xt_row_words(p), 0xdeadbeefull);
          xnor_conv_prepare_input(p, xt.data(), 0, c.N * c.H);
          // the one-pass preparation from the float source (NCHW and NHWC) must give the same words
          std::vector<uint64_t> xt2(xt.size(), 0x5555ull), xt3(xt.size(), 0x7777ull);
          PackSource s{x.data(), ElemType::F32, c.N, c.Cin, c.H, c.W, c.Cin * c.H * c.W, c.H * c.W, c.W, 1};
          xnor_conv_prepare_input_from(p, s, xt2.data(), 0, c.N * c.H, isa);
          FP_CHECK(xt2 == xt);
          std::vector<float> xl(x.size());
          for (int64_t n = 0; n < c.N; ++n)
            for (int64_t ci = 0; ci < c.Cin; ++ci)
              for (int64_t h = 0; h < c.H; ++h)
                for (int64_t w = 0; w < c.W; ++w)
                  xl[((n * c.H + h) * c.W + w) * c.Cin + ci] = x[((n * c.Cin + ci) * c.H + h) * c.W + w];
          PackSource s2{xl.data(), ElemType::F32, c.N, c.Cin, c.H, c.W, c.H * c.W * c.Cin, 1, c.W * c.Cin, c.Cin};
          xnor_conv_prepare_input_from(p, s2, xt3.data(), 0, c.N * c.H, isa);
          FP_CHECK(xt3 == xt);
          p.xt = xt.data();
          if (variant == 3) {
            p.row_pairs = xnor_conv_row_pairs_fit(p, isa);
            FP_CHECK(p.row_pairs == (isa == Isa::Avx2 && Ho >= 2 && Wo <= 16));
            if (!p.row_pairs) continue;
          }
        }
        // in two calls, as two threads would
        const int64_t units = xnor_conv_units(p);
        xnor_conv2d_forward(p, 0, units / 2, isa);
        xnor_conv2d_forward(p, units / 2, units, isa);
        for (int64_t n = 0; n < c.N; ++n)
          for (int64_t o = 0; o < c.Cout; ++o)
            for (int64_t oh = 0; oh < Ho; ++oh)
              for (int64_t ow = 0; ow < Wo; ++ow) {
                int32_t dot = 0;
                for (int64_t ci = 0; ci < c.Cin; ++ci)
                  for (int64_t i = 0; i < c.K; ++i)
                    for (int64_t j = 0; j < c.K; ++j) {
                      const int64_t ih = oh * c.s - c.p + i * c.d, iw = ow * c.s - c.p + j * c.d;
                      const int wv = sgn(w[((o * c.Cin + ci) * c.K + i) * c.K + j]);
                      if (ih >= 0 && ih < c.H && iw >= 0 && iw < c.W)
                        dot += wv * sgn(x[((n * c.Cin + ci) * c.H + ih) * c.W + iw]);
                      else if (pad_value == -1)
                        dot -= wv;
                    }
                volatile float prod = static_cast<float>(dot) * alpha[o];  // two roundings, as documented
                const float ref = prod + bias[o];
                const int64_t idx = nhwc ? ((n * Ho + oh) * Wo + ow) * c.Cout + o : ((n * c.Cout + o) * Ho + oh) * Wo + ow;
                FP_CHECK(out[idx] == ref);
              }
      }
    }
}

}  // namespace

int main() {
  return run_isa_test("xnor_conv", [](Isa isa) {
    test_pack(isa);
    test_pack_weight(isa);
    test_gemm_block(isa);
    test_peak(isa);
    test_weight_popcounts();
    test_conv(isa);
  });
}
