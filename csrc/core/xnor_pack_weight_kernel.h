// The parts of xnor_conv2d's one-pass float32 weight pack that the AVX-512 and AVX2 forms share: the
// pext tap gather and ATen's summation order of sum |w| over a vector type V. Included inside an
// anonymous namespace of each ISA's translation unit, so each gets its own copy compiled for its ISA
// (one shared inline definition could be the other ISA's code).

// Tap k of channel c of a 64-channel chunk sits at bit c K + k of the chunk's K words (see below); tap k's
// bits are gathered from words (k >> 6) .. ((63 K + k) >> 6), each holding one at least as K <= 64.
struct TapGather {
  uint64_t mask[kPackWeightMaxTaps][kPackWeightMaxTaps];
  int shift[kPackWeightMaxTaps][kPackWeightMaxTaps];
  constexpr explicit TapGather(int64_t K) : mask(), shift() {
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t c = 0; c < 64; ++c) mask[k][(c * K + k) >> 6] |= uint64_t(1) << ((c * K + k) & 63);
      int sh = 0;
      for (int64_t j = 0; j < K; ++j) {
        shift[k][j] = sh;
        sh += __builtin_popcountll(mask[k][j]);
      }
    }
  }
};

inline int64_t ceil_log2_min1(int64_t x) { return x <= 2 ? 1 : 64 - __builtin_clzll(uint64_t(x - 1)); }

// sum |row[0, n)| with the additions, operands and order of ATen's CPU sum of a contiguous row
// (SumKernel.cpp, vectorized_inner_sum on V::L-lane vectors), so that it divided by n is bit for bit
// `w.abs().mean(...)`: vectors are taken four at a time (four accumulators); the groups are summed in
// a 4-level cascade that carries level j into level j + 1 every 2^p groups (p = max(4, ceil_log2(groups)
// / 4)); then the levels, the leftover vectors and the four accumulators are added into the first;
// the scalar tail is summed from 0, then the first accumulator's lanes are added to it in lane order,
// and the result is added to ATen's zero-filled output. Needs n >= V::L (shorter rows take another ATen
// path); xnor_conv2d checks the whole thing against ATen once per process before it relies on it.
template <class V>
float aten_order_abs_sum(const float* row, int64_t n) {
  using T = typename V::T;
  constexpr int L = V::L;
  const int64_t nv = n / L, ng = nv / 4;
  const int64_t p = std::max<int64_t>(4, ceil_log2_min1(ng) / 4);
  const int64_t step = int64_t(1) << p, mask = step - 1;
  T acc[4][4];
  for (auto& lv : acc)
    for (auto& a : lv) a = V::zero();
  int64_t i = 0;
  while (i + step <= ng) {
    for (int64_t j = 0; j < step; ++j, ++i)
      for (int k = 0; k < 4; ++k) acc[0][k] = V::add(acc[0][k], V::load_abs(row + (i * 4 + k) * L));
    for (int lv = 1; lv < 4; ++lv) {
      for (int k = 0; k < 4; ++k) acc[lv][k] = V::add(acc[lv][k], acc[lv - 1][k]), acc[lv - 1][k] = V::zero();
      if ((i & (mask << (lv * p))) != 0) break;
    }
  }
  for (; i < ng; ++i)
    for (int k = 0; k < 4; ++k) acc[0][k] = V::add(acc[0][k], V::load_abs(row + (i * 4 + k) * L));
  for (int lv = 1; lv < 4; ++lv)
    for (int k = 0; k < 4; ++k) acc[0][k] = V::add(acc[0][k], acc[lv][k]);
  for (int64_t v = ng * 4; v < nv; ++v) acc[0][0] = V::add(acc[0][0], V::load_abs(row + v * L));
  for (int k = 1; k < 4; ++k) acc[0][0] = V::add(acc[0][0], acc[0][k]);
  float total = 0.f;
  for (int64_t e = nv * L; e < n; ++e) total += std::fabs(row[e]);
  alignas(64) float lanes[L];
  V::store(lanes, acc[0][0]);
  for (int k = 0; k < L; ++k) total += lanes[k];
  return 0.f + total;
}

// Tap words by pext (any K <= kPackWeightMaxTaps): tap k gathers its bits from words (k >> 6) ..
// ((63 K + k) >> 6), one pext each (81 for 3x3 per chunk: the pass's limit, one pext a cycle).
struct PextTaps {
  const TapGather& tg;
  int64_t K;
  __attribute__((target("bmi2"))) void operator()(const uint64_t* words, uint64_t* d, int64_t CW) const {
    for (int64_t k = 0; k < K; ++k) {
      uint64_t r = 0;
      for (int64_t j = k >> 6; j <= ((63 * K + k) >> 6); ++j) r |= _pext_u64(words[j], tg.mask[k][j]) << tg.shift[k][j];
      d[k * CW] = r;
    }
  }
};

// f(std::integral_constant<int64_t, KC>(), taps) with the pext tap gather for K taps: KC = 9 with the
// 3x3 table built at compile time, else KC = 0 with a table built here (~29 KB of stack).
template <class F>
void with_pext_taps(int64_t K, const F& f) {
  if (K == 9) {
    static constexpr TapGather k3x3(9);
    f(std::integral_constant<int64_t, 9>(), PextTaps{k3x3, 9});
  } else {
    const TapGather tg(K);
    f(std::integral_constant<int64_t, 0>(), PextTaps{tg, K});
  }
}
