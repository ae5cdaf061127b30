// AVX-512 rows of the input-gradient permute GEMM (xnor_ste_input.h).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/xnor_ste_input.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
namespace fastpose {
namespace core {
namespace {

inline __mmask16 tail16(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n > 0 ? n : 0)) - 1u);
}

// s[j] lane m: +1 where bit j of m is set, else -1 (the sign of g'[co0 + j] in table entry m).
struct Signs {
  __m512 s[4];
  Signs() {
    alignas(64) float v[4][16];
    for (int j = 0; j < 4; ++j)
      for (int m = 0; m < 16; ++m) v[j][m] = (m >> j) & 1 ? 1.f : -1.f;
    for (int j = 0; j < 4; ++j) s[j] = _mm512_load_ps(v[j]);
  }
};

// The tables of output row (n, yq), columns lo .. lo + RW - 1 (zero outside the output image): entry m of
// group cg is (+-g'[4cg] +-g'[4cg+1]) + (+-g'[4cg+2] +-g'[4cg+3]), g' = g * alpha, 0 past Cout.
void build_row(const SteInputProblem& p, const SteInputPlan& pl, const Signs& S, int64_t n, int64_t yq, float* T) {
  const int64_t col = pl.CG * 16, Cp = pl.CG * 4;
  for (int64_t c = 0; c < pl.RW; ++c) {
    float* dst = T + c * col;
    const int64_t xq = pl.lo + c;
    if (xq < 0 || xq >= p.Wo) {
      std::memset(dst, 0, static_cast<size_t>(col) * sizeof(float));
      continue;
    }
    const float* src = p.g + n * p.gsn + yq * p.gsh + xq * p.gsw;
    for (int64_t c16 = 0; c16 < Cp; c16 += 16) {  // c16 < Cout: Cp is Cout rounded up to 4
      alignas(64) float tmp[16];
      const int64_t left = std::min<int64_t>(16, p.Cout - c16);
      const __mmask16 m = tail16(left);
      __m512 gv;
      if (p.gsc == 1) {
        gv = _mm512_maskz_loadu_ps(m, src + c16);
      } else {
        for (int i = 0; i < 16; ++i) tmp[i] = i < left ? src[(c16 + i) * p.gsc] : 0.f;
        gv = _mm512_load_ps(tmp);
      }
      if (p.alpha) gv = _mm512_mul_ps(gv, _mm512_maskz_loadu_ps(m, p.alpha + c16));
      _mm512_store_ps(tmp, gv);
      const int64_t groups = std::min<int64_t>(4, (Cp - c16) / 4);
      for (int64_t q = 0; q < groups; ++q) {
        const float* t4 = tmp + 4 * q;
        const __m512 u = _mm512_fmadd_ps(_mm512_set1_ps(t4[1]), S.s[1], _mm512_mul_ps(_mm512_set1_ps(t4[0]), S.s[0]));
        const __m512 v = _mm512_fmadd_ps(_mm512_set1_ps(t4[3]), S.s[3], _mm512_mul_ps(_mm512_set1_ps(t4[2]), S.s[2]));
        _mm512_store_ps(dst + (c16 / 4 + q) * 16, _mm512_add_ps(u, v));
      }
    }
  }
}

// Input pixels x0 .. x0 + R - 1 of row (n, y), channel vectors cv0 .. cv0 + Cv - 1: R x Cv accumulators.
template <int Cv, int R>
void block(const SteInputProblem& p, const SteInputPlan& pl, const float* const* trow, const int32_t* idx, int64_t n,
           int64_t y, int64_t x0, int64_t cv0) {
  __m512 acc[R][Cv];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < Cv; ++c) acc[r][c] = _mm512_setzero_ps();
  const int64_t CG = pl.CG, col = CG * 16, istep = pl.CV * 16;
  for (int64_t kh = 0; kh < p.KH; ++kh)
    for (int64_t kw = 0; kw < p.KW; ++kw) {
      const float* T = trow[kh] + (x0 + p.pw - kw - pl.lo) * col;
      const int32_t* I = idx + ((kh * p.KW + kw) * CG * pl.CV + cv0) * 16;
      for (int64_t cg = 0; cg < CG; ++cg, T += 16, I += istep) {
        __m512i iv[Cv];
#pragma GCC unroll 4
        for (int c = 0; c < Cv; ++c) iv[c] = _mm512_loadu_si512(I + c * 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m512 t = _mm512_load_ps(T + r * col);
#pragma GCC unroll 4
          for (int c = 0; c < Cv; ++c) acc[r][c] = _mm512_add_ps(acc[r][c], _mm512_permutexvar_ps(iv[c], t));
        }
      }
    }
  // The straight-through window: zero where |x| > 1 (or NaN), from the forward's pass bits.
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const int64_t x = x0 + r;
    if (x >= p.W) break;
    const uint64_t* pass = p.pass + ((n * p.H + y) * p.W + x) * p.CW;
    float* out = p.gx + n * p.xsn + y * p.xsh + x * p.xsw;
#pragma GCC unroll 4
    for (int c = 0; c < Cv; ++c) {
      const int64_t ci0 = (cv0 + c) * 16;
      const __mmask16 keep = static_cast<__mmask16>(pass[ci0 >> 6] >> (ci0 & 63));
      _mm512_mask_storeu_ps(out + ci0, tail16(p.Cin - ci0), _mm512_maskz_mov_ps(keep, acc[r][c]));
    }
  }
}

template <int R>
void blocks(const SteInputProblem& p, const SteInputPlan& pl, const float* const* trow, const int32_t* idx, int64_t n,
            int64_t y, int64_t x0) {
  for (int64_t cv0 = 0; cv0 < pl.CV; cv0 += 4) {
    switch (std::min<int64_t>(4, pl.CV - cv0)) {
      case 1: block<1, R>(p, pl, trow, idx, n, y, x0, cv0); break;
      case 2: block<2, R>(p, pl, trow, idx, n, y, x0, cv0); break;
      case 3: block<3, R>(p, pl, trow, idx, n, y, x0, cv0); break;
      default:  // 4 x R accumulators: R = 8 as two halves
        block<4, 4>(p, pl, trow, idx, n, y, x0, cv0);
        if (R == 8) block<4, 4>(p, pl, trow, idx, n, y, x0 + 4, cv0);
    }
  }
}

}  // namespace

void ste_input_rows_avx512(const SteInputProblem& p, const SteInputPlan& pl, const int32_t* idx, float* ring,
                           int64_t begin, int64_t end) {
  const Signs S;
  const int64_t rowf = pl.RW * pl.CG * 16;
  float* zero = ring + p.KH * rowf;
  std::memset(zero, 0, static_cast<size_t>(rowf) * sizeof(float));
  // Slot yq % KH holds output row yq of image n (tag n * Ho + yq): a row's KH output rows are consecutive,
  // so they never share a slot, and each next input row builds one new table row.
  std::vector<int64_t> tag(static_cast<size_t>(p.KH), -1);
  std::vector<const float*> trow(static_cast<size_t>(p.KH));
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / p.H, y = r % p.H;
    for (int64_t kh = 0; kh < p.KH; ++kh) {
      const int64_t yq = y + p.ph - kh;
      if (yq < 0 || yq >= p.Ho) {
        trow[kh] = zero;
        continue;
      }
      const int64_t s = yq % p.KH, key = n * p.Ho + yq;
      float* T = ring + s * rowf;
      if (tag[s] != key) {
        build_row(p, pl, S, n, yq, T);
        tag[s] = key;
      }
      trow[kh] = T;
    }
    for (int64_t x0 = 0; x0 < pl.Wp; x0 += pl.R) {
      if (pl.R == 8)
        blocks<8>(p, pl, trow.data(), idx, n, y, x0);
      else
        blocks<4>(p, pl, trow.data(), idx, n, y, x0);
    }
  }
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
