// Compares the (emulated) AVX-512 path of core/softmax_dsnt with the portable path: every element
// type, no regulariser / KL / JS, odd sizes, forward and backward.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>
#include "core/softmax_dsnt.h"
using namespace fastpose::core;
int main() {
  std::mt19937 g(7); std::normal_distribution<float> nd(0, 2);
  int fails = 0;
  for (int type = 0; type < 3; ++type)
  for (int reg = 0; reg < 3; ++reg)
  for (auto hw : {std::pair<int,int>{5,7}, {64,48}, {17,33}, {3,100}, {1,1}}) {
    int B = 2, J = 3, H = hw.first, W = hw.second;
    std::vector<float> xf(B*J*H*W); for (auto& v : xf) v = nd(g);
    std::vector<uint16_t> xh(xf.size());
    for (size_t i = 0; i < xf.size(); ++i) { xh[i] = type == 1 ? float_to_half(xf[i]) : float_to_bf16(xf[i]); }
    std::vector<float> tgt(B*J*2); for (auto& v : tgt) v = nd(g) * 0.2f;
    DsntProblem p; p.logits = type == 0 ? (const void*)xf.data() : (const void*)xh.data(); p.type = (ElemType)type;
    p.B=B; p.J=J; p.H=H; p.W=W; p.stride_b=J*H*W; p.stride_j=H*W; p.stride_h=W; p.reg=(DsntReg)reg; p.target=tgt.data(); p.sigma=1.3;
    std::vector<float> s1(4*B*J), s2(4*B*J), d1(B*J), d2(B*J), gc(2*B*J), gd(B*J);
    for (auto& v : gc) v = nd(g); for (auto& v : gd) v = nd(g);
    softmax_dsnt_forward(p, 0, B*J, s1.data(), d1.data(), Isa::Portable);
    softmax_dsnt_forward(p, 0, B*J, s2.data(), d2.data(), Isa::Avx512);
    for (int m = 0; m < B*J; ++m) {
      if (std::fabs(s1[4*m+2]-s2[4*m+2]) > 2e-6 || std::fabs(s1[4*m+3]-s2[4*m+3]) > 2e-6) { ++fails; printf("coord mismatch type %d reg %d %dx%d\n", type, reg, H, W); }
      if (reg && std::fabs(d1[m]-d2[m]) > 5e-5*(1+std::fabs(d1[m]))) { ++fails; printf("div mismatch %g %g type %d reg %d %dx%d\n", d1[m], d2[m], type, reg, H, W); }
    }
    std::vector<float> o1(B*J*H*W), o2(B*J*H*W); std::vector<uint16_t> h1(B*J*H*W), h2(B*J*H*W);
    void* a = type == 0 ? (void*)o1.data() : (void*)h1.data(); void* b = type == 0 ? (void*)o2.data() : (void*)h2.data();
    softmax_dsnt_backward(p, 0, B*J, s1.data(), gc.data(), reg ? gd.data() : nullptr, a, Isa::Portable);
    softmax_dsnt_backward(p, 0, B*J, s2.data(), gc.data(), reg ? gd.data() : nullptr, b, Isa::Avx512);
    double md = 0;
    for (size_t i = 0; i < o1.size(); ++i) {
      double u = type == 0 ? o1[i] : (type == 1 ? half_to_float(h1[i]) : bf16_to_float(h1[i]));
      double v = type == 0 ? o2[i] : (type == 1 ? half_to_float(h2[i]) : bf16_to_float(h2[i]));
      md = std::fmax(md, std::fmax(std::fabs(u - v) - 1e-6, 0.0) / (1e-3 + std::fabs(u)));  // 1e-6 absolute floor
    }
    double tol = type == 0 ? 1e-4 : (type == 1 ? 3e-3 : 2e-2);
    if (md > tol) { ++fails; printf("grad mismatch %g type %d reg %d %dx%d\n", md, type, reg, H, W); }
  }
  printf("fails %d\n", fails); return fails != 0;
}
