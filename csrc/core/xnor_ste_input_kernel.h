// The rows of the input-gradient permute GEMM (xnor_ste_input.h) for one permute type: PermAvx512
// (16-entry tables, groups of 4 output channels) or PermAvx2 (8 entries, groups of 3). Included inside a
// `#pragma GCC target` region and an anonymous namespace after the permute type; needs <cstring>,
// <algorithm>, <vector>.

template <class P>
struct SteInputKernel {
  using F = typename P::F;
  using I = typename P::I;
  static constexpr int L = P::L, G = P::G;

  const SteInputProblem& p;
  const SteInputPlan& pl;
  const int32_t* idx;
  F sgn[G];  // lane m: +1 where bit j of m is set, else -1 (the sign of g'[G cg + j] in table entry m)

  SteInputKernel(const SteInputProblem& p_, const SteInputPlan& pl_, const int32_t* idx_) : p(p_), pl(pl_), idx(idx_) {
    alignas(64) float v[L];
    for (int j = 0; j < G; ++j) {
      for (int m = 0; m < L; ++m) v[m] = (m >> j) & 1 ? 1.f : -1.f;
      sgn[j] = P::load(v);
    }
  }

  // The tables of output row (n, yq), columns lo .. lo + RW - 1 (zero outside the output image): entry m
  // of group cg sums +-g'[G cg + j] over j as (+-g'0 +-g'1) + (+-g'2 [+-g'3]); g' = g * alpha, 0 past Cout.
  // col: CG * G floats (and a vector more) of scratch for one column's g'.
  void build_row(int64_t n, int64_t yq, float* T, float* col) const {
    const int64_t stride = pl.CG * L, Cp = pl.CG * G;
    for (int64_t c = 0; c < pl.RW; ++c) {
      float* dst = T + c * stride;
      const int64_t xq = pl.lo + c;
      if (xq < 0 || xq >= p.Wo) {
        std::memset(dst, 0, static_cast<size_t>(stride) * sizeof(float));
        continue;
      }
      const float* src = p.g + n * p.gsn + yq * p.gsh + xq * p.gsw;
      for (int64_t c0 = 0; c0 < Cp; c0 += L) {
        const int n_left = static_cast<int>(std::min<int64_t>(L, std::max<int64_t>(0, p.Cout - c0)));
        F gv;
        if (p.gsc == 1) {
          gv = P::load_partial(src + c0, n_left);
        } else {
          alignas(64) float tmp[L];
          for (int i = 0; i < L; ++i) tmp[i] = i < n_left ? src[(c0 + i) * p.gsc] : 0.f;
          gv = P::load(tmp);
        }
        if (p.alpha) gv = P::mul(gv, P::load_partial(p.alpha + c0, n_left));
        P::store(col + c0, gv);
      }
      for (int64_t cg = 0; cg < pl.CG; ++cg) {
        const float* t = col + G * cg;
        const F u = P::fmadd(P::set1(t[1]), sgn[1], P::mul(P::set1(t[0]), sgn[0]));
        F v = P::mul(P::set1(t[2]), sgn[2]);
        if (G == 4) v = P::fmadd(P::set1(t[G - 1]), sgn[G - 1], v);
        P::store(dst + cg * L, P::add(u, v));
      }
    }
  }

  // Input pixels x0 .. x0 + R - 1 of row (n, y), channel vectors cv0 .. cv0 + Cv - 1: R x Cv accumulators.
  template <int Cv, int R>
  void block(const float* const* trow, int64_t n, int64_t y, int64_t x0, int64_t cv0) const {
    F acc[R][Cv];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int c = 0; c < Cv; ++c) acc[r][c] = P::zero();
    const int64_t CG = pl.CG, stride = CG * L, istep = pl.CV * L;
    for (int64_t kh = 0; kh < p.KH; ++kh)
      for (int64_t kw = 0; kw < p.KW; ++kw) {
        const float* T = trow[kh] + (x0 + p.pw - kw - pl.lo) * stride;
        const int32_t* ip = idx + ((kh * p.KW + kw) * CG * pl.CV + cv0) * L;
        for (int64_t cg = 0; cg < CG; ++cg, T += L, ip += istep) {
          I iv[Cv];
#pragma GCC unroll 4
          for (int c = 0; c < Cv; ++c) iv[c] = P::loadi(ip + c * L);
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r) {
            const F t = P::load(T + r * stride);
#pragma GCC unroll 4
            for (int c = 0; c < Cv; ++c) acc[r][c] = P::add(acc[r][c], P::perm(iv[c], t));
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
        const int64_t ci0 = (cv0 + c) * L;
        P::store_window(out + ci0, acc[r][c], static_cast<uint32_t>(pass[ci0 >> 6] >> (ci0 & 63)),
                        static_cast<int>(std::min<int64_t>(L, p.Cin - ci0)));
      }
    }
  }

  template <int R>
  void blocks(const float* const* trow, int64_t n, int64_t y, int64_t x0) const {
    constexpr int M = P::kMaxCv;  // M x 4 accumulators: an 8-pixel block runs as two halves
    for (int64_t cv0 = 0; cv0 < pl.CV; cv0 += M) {
      const int64_t cv = std::min<int64_t>(M, pl.CV - cv0);
      if (cv == M) {
        block<M, 4>(trow, n, y, x0, cv0);
        if (R == 8) block<M, 4>(trow, n, y, x0 + 4, cv0);
      } else if (cv == 1) {
        block<1, R>(trow, n, y, x0, cv0);
      } else {
        if constexpr (M > 2) {
          if (cv == 2)
            block<2, R>(trow, n, y, x0, cv0);
          else
            block<3, R>(trow, n, y, x0, cv0);
        }
      }
    }
  }

  void rows(float* ring, int64_t begin, int64_t end) const {
    const int64_t rowf = pl.RW * pl.CG * L;
    float* zero = ring + p.KH * rowf;
    float* col = zero + rowf;
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
          build_row(n, yq, T, col);
          tag[s] = key;
        }
        trow[kh] = T;
      }
      for (int64_t x0 = 0; x0 < pl.Wp; x0 += pl.R) {
        if (pl.R == 8)
          blocks<8>(trow.data(), n, y, x0);
        else
          blocks<4>(trow.data(), n, y, x0);
      }
    }
  }
};
