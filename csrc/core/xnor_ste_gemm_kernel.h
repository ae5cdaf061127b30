// The table GEMM of xnor_ste_gemm.h for one vector type (VecAvx512, VecAvx2, VecScalar<float>), and the
// walk over nibble positions the nibble builders share. Included inside an anonymous namespace after the
// Vec header; needs <cstring>, <vector>, <algorithm>.

// For rows [begin, end) and every nibble position xs: chunk(wj, dst) with wj[j] the sign words of input
// pixel xs - pw + j (null outside the image) and dst the position's CinN bytes.
template <class Chunk>
void for_each_nibble_position(const SteWeightProblem& p, const SteWeightPlan& pl, uint8_t* nib, int64_t begin,
                              int64_t end, Chunk chunk) {
  for (int64_t r = begin; r < end; ++r) {
    const uint64_t* row = p.sign + r * p.W * p.CW;
    for (int64_t xs = 0; xs < pl.NW; ++xs) {
      const uint64_t* wj[4];
      for (int j = 0; j < 4; ++j) {
        const int64_t x = xs - p.pw + j;
        wj[j] = x >= 0 && x < p.W ? row + x * p.CW : nullptr;
      }
      chunk(wj, nib + (r * pl.NW + xs) * pl.CinN);
    }
  }
}
template <class Vec>
struct SteWeightKernel {
  static constexpr int L = Vec::N;
  // Pixel groups per table tile: the tile's tables (16 rows of CoC floats per group) fill ~32 KB, so the
  // jobs' row reads hit L1 (at 128 KB they came from L2 at a fraction of the adds' rate).
  static int64_t tile_groups(int64_t CoC) { return std::max<int64_t>(4, 8192 / (16 * CoC)); }

  const SteWeightProblem& p;
  const SteWeightPlan& pl;
  const uint8_t* nib;
  const uint8_t* zero;
  float* gwt;

  Vec load_g(int64_t n, int64_t co, int64_t y, int64_t x) const {
    const int64_t left = p.Cout - co;
    if (left <= 0) return Vec::set1(0.f);
    const float* src = p.g + n * p.gsn + co * p.gsc + y * p.gsh + x * p.gsw;
    if (p.gsc == 1) return Vec::load_partial(src, static_cast<int>(std::min<int64_t>(left, L)), 0.f);
    float buf[L];
    for (int i = 0; i < L; ++i) buf[i] = i < left ? src[i * p.gsc] : 0.f;
    return Vec::load(buf);
  }

  // The 16-row table of pixel group gi for output channels [co0, co0 + CoC): row m = sum_j (bit j of m ? +1 :
  // -1) * g[x0 + j], g = 0 past the row's end. Each row is one sum of two pair sums (two roundings).
  void build_table(int64_t gi, int64_t co0, float* T) const {
    const int64_t x0 = (gi % pl.Wg) * 4, y = (gi / pl.Wg) % p.Ho, n = gi / (pl.Wg * p.Ho);
    const Vec z = Vec::set1(0.f);
    for (int v = 0; v < pl.V; ++v) {
      const int64_t co = co0 + v * L;
      Vec g4[4];
      for (int j = 0; j < 4; ++j) g4[j] = x0 + j < p.Wo ? load_g(n, co, y, x0 + j) : z;
      const Vec a[4] = {z - g4[0] - g4[1], g4[0] - g4[1], g4[1] - g4[0], g4[0] + g4[1]};
      const Vec b[4] = {z - g4[2] - g4[3], g4[2] - g4[3], g4[3] - g4[2], g4[2] + g4[3]};
      for (int m = 0; m < 16; ++m) Vec::store(T + m * pl.CoC + v * L, a[m & 3] + b[m >> 2]);
    }
  }

  // One job's register block over the tile's groups [t0, t0 + nt): acc[j][v] += T_g[nibble][v].
  template <int V, int B>
  void block(const float* tables, const uint8_t* const* rows, int64_t nt, int64_t kh, int64_t kw, int64_t ci0,
             float* out, bool first) const {
    // Fully unrolled so that the B * V accumulators live in registers.
    // Each tile's sum starts from zero and is added to out once: two-level sums (a tile of groups,
    // then the tiles), not one serial float sum over every pixel of the batch.
    Vec acc[B * V];
#pragma GCC unroll 32
    for (int i = 0; i < B * V; ++i) acc[i] = Vec::set1(0.f);
    constexpr int64_t CoC = V * L;  // == pl.CoC; a constant row stride makes the row address a shift
    const int64_t off = kw * pl.CinN + ci0;
    for (int64_t t = 0; t < nt; ++t) {
      uint8_t idx[B];
      std::memcpy(idx, rows[t * p.KH + kh] + off, B);
      const float* T = tables + t * 16 * CoC;
#pragma GCC unroll 32
      for (int j = 0; j < B; ++j) {
        const float* r = T + (idx[j] & 15) * CoC;
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) acc[j * V + v] = acc[j * V + v] + Vec::load(r + v * L);
      }
    }
#pragma GCC unroll 32
    for (int i = 0; i < B * V; ++i) {
      float* o = out + (i / V) * pl.CoP + (i % V) * L;
      Vec::store(o, first ? acc[i] : Vec::load(o) + acc[i]);
    }
  }

  template <int V, int B>
  void run_jobs(int64_t begin, int64_t end) const {
    const int64_t taps = p.KH * p.KW, per_chunk = taps * pl.cblocks;
    const int64_t kTile = tile_groups(pl.CoC);
    std::vector<float> tables(static_cast<size_t>(kTile * 16 * pl.CoC) + 16);
    float* T = tables.data() + ((16 - (reinterpret_cast<uintptr_t>(tables.data()) / sizeof(float)) % 16) % 16);
    // Per group and kernel row: the nibble row it reads at kw = 0 (the zero row above / below the image).
    std::vector<const uint8_t*> rows(static_cast<size_t>(kTile * p.KH));
    for (int64_t c = begin / per_chunk; c * per_chunk < end; ++c) {
      const int64_t j0 = std::max(begin, c * per_chunk), j1 = std::min(end, (c + 1) * per_chunk);
      for (int64_t t0 = 0; t0 < pl.groups; t0 += kTile) {
        const int64_t nt = std::min(kTile, pl.groups - t0);
        for (int64_t t = 0; t < nt; ++t) {
          const int64_t gi = t0 + t;
          build_table(gi, c * pl.CoC, T + t * 16 * pl.CoC);
          const int64_t x0 = (gi % pl.Wg) * 4, y = (gi / pl.Wg) % p.Ho, n = gi / (pl.Wg * p.Ho);
          for (int64_t kh = 0; kh < p.KH; ++kh) {
            const int64_t yi = y + kh - p.ph;
            rows[t * p.KH + kh] = (yi >= 0 && yi < p.H ? nib + (n * p.H + yi) * pl.NW * pl.CinN : zero) + x0 * pl.CinN;
          }
        }
        for (int64_t j = j0; j < j1; ++j) {
          const int64_t r = j - c * per_chunk, tap = r / pl.cblocks, ci0 = (r % pl.cblocks) * B;
          float* out = gwt + (tap * pl.CinP + ci0) * pl.CoP + c * pl.CoC;
          block<V, B>(T, rows.data(), nt, tap / p.KW, tap % p.KW, ci0, out, t0 == 0);
        }
      }
    }
  }
};

template <class Vec, int kAcc>
void ste_weight_jobs_impl(const SteWeightProblem& p, const SteWeightPlan& pl, const uint8_t* nib, const uint8_t* zero,
                          float* gwt, int64_t begin, int64_t end) {
  const SteWeightKernel<Vec> k{p, pl, nib, zero, gwt};
  switch (pl.V) {
    case 1: return k.template run_jobs<1, kAcc>(begin, end);
    case 2: return k.template run_jobs<2, kAcc / 2>(begin, end);
    case 3: return k.template run_jobs<3, kAcc / 3>(begin, end);
    default: return k.template run_jobs<4, kAcc / 4>(begin, end);
  }
}
