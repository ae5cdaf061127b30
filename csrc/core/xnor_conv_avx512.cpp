// AVX-512 (F + BW + VL + VPOPCNTDQ) kernels of the XNOR convolution, called only when cpuid has them:
// the popcount GEMM (body in xnor_conv_avx512_kernel.h), float32 bit packing of NCHW / NHWC rows, and
// the register-only xor + popcount + add loop that measures the machine's limit for the GEMM.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "core/xnor_conv.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,popcnt")
namespace fastpose {
namespace core {
namespace {

#include "core/xnor_conv_avx512_kernel.h"

}  // namespace

#include "core/xnor_conv_avx512_entry.h"

int64_t xnor_popcount_peak_avx512(int64_t iters) {
  // 16 independent accumulators over 4 x 4 distinct operand pairs, as in the GEMM's register block; the asm barrier keeps
  // the compiler from hoisting the loop-invariant xors (the operands "change" every iteration).
  constexpr int A = 16, X = 4;
  __m512i acc[A], v[X];
  for (int i = 0; i < A; ++i) acc[i] = _mm512_setzero_si512();
  for (int i = 0; i < X; ++i) v[i] = _mm512_set1_epi64(0x9e3779b97f4a7c15ll * (i + 1));
  __m512i wv[A / X];
  for (int i = 0; i < A / X; ++i) wv[i] = _mm512_set1_epi64(0x0123456789abcdefll + i);
  for (int64_t it = 0; it < iters; ++it) {
    for (int i = 0; i < X; ++i) __asm__ volatile("" : "+v"(v[i]));
    for (int i = 0; i < A; ++i)
      acc[i] = _mm512_add_epi64(acc[i], _mm512_popcnt_epi64(_mm512_xor_si512(v[i % X], wv[i / X])));
  }
  alignas(64) int64_t t[8];
  __m512i s = acc[0];
  for (int i = 1; i < A; ++i) s = _mm512_add_epi64(s, acc[i]);
  _mm512_store_si512(t, s);
  volatile int64_t sink = t[0];
  (void)sink;
  return iters * A * 512;
}

// Sums of adjacent word pairs of the 16 words in (a, b), in order: 8 sums.
static inline __m512i pair_sums(__m512i a, __m512i b) {
  const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
  return _mm512_add_epi64(_mm512_permutex2var_epi64(a, even, b), _mm512_permutex2var_epi64(a, odd, b));
}

// Eight taps per step for the word counts of 64 / 128 / 256 channels (a pair-sum tree over whole
// vectors), one masked vector sweep per tap otherwise and for the tail. A fixed cost of every call of
// the small layers: ~1 us of serial work for (128, 3, 3, 2) words as a scalar POPCNT loop.
void xnor_weight_popcounts_avx512(const uint64_t* w, int64_t taps, int64_t CW, int32_t* out) {
  int64_t t = 0;
  const auto pc = [&](int64_t word) { return _mm512_popcnt_epi64(_mm512_loadu_si512(w + word)); };
  const auto put = [&](int64_t tap, __m512i s) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + tap), _mm512_cvtepi64_epi32(s));
  };
  if (CW == 1) {
    for (; t + 8 <= taps; t += 8) put(t, pc(t));
  } else if (CW == 2) {
    for (; t + 8 <= taps; t += 8) put(t, pair_sums(pc(2 * t), pc(2 * t + 8)));
  } else if (CW == 4) {
    for (; t + 8 <= taps; t += 8)
      put(t, pair_sums(pair_sums(pc(4 * t), pc(4 * t + 8)), pair_sums(pc(4 * t + 16), pc(4 * t + 24))));
  }
  for (; t < taps; ++t) {
    __m512i acc = _mm512_setzero_si512();
    for (int64_t i = 0; i < CW; i += 8) {
      const __mmask8 m = static_cast<__mmask8>(CW - i >= 8 ? 0xff : (1u << (CW - i)) - 1);
      acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_maskz_loadu_epi64(m, w + t * CW + i)));
    }
    out[t] = static_cast<int32_t>(_mm512_reduce_add_epi64(acc));
  }
}

namespace {

#include "core/xnor_pack_weight_kernel.h"

// ATen's 8-lane summation order (aten_order_abs_sum below spells it out for 16 lanes), fed in row order
// as the pack reads the row, one group of 32 floats (two 16-float halves) at a time, so the floats are
// loaded once: the 512-bit accumulators a / b of a level hold ATen's four 8-lane ones (slots 0-1, 2-3).
// What follows the last full group (leftover vectors, scalars) finish() adds from memory.
struct StreamSum8 {
  __m512 l0a, l0b, l1a, l1b, l2a, l2b, l3a, l3b;
  int64_t groups, done, p, mask;
  explicit StreamSum8(int64_t n) : groups(n / 32), done(0) {
    p = std::max<int64_t>(4, ceil_log2_min1(groups) / 4);
    mask = (int64_t(1) << p) - 1;
    l0a = l0b = l1a = l1b = l2a = l2b = l3a = l3b = _mm512_setzero_ps();
  }
  // The next group (g = done) of the row, if it is a full one: |x| of its 32 floats, halves lo / hi.
  void feed(__m512 lo, __m512 hi) {
    if (done >= groups) return;
    l0a = _mm512_add_ps(l0a, _mm512_abs_ps(lo)), l0b = _mm512_add_ps(l0b, _mm512_abs_ps(hi));
    ++done;
    if ((done & mask) != 0) return;
    const __m512 z = _mm512_setzero_ps();
    l1a = _mm512_add_ps(l1a, l0a), l1b = _mm512_add_ps(l1b, l0b), l0a = l0b = z;
    if ((done & (mask << p)) != 0) return;
    l2a = _mm512_add_ps(l2a, l1a), l2b = _mm512_add_ps(l2b, l1b), l1a = l1b = z;
    if ((done & (mask << (2 * p))) != 0) return;
    l3a = _mm512_add_ps(l3a, l2a), l3b = _mm512_add_ps(l3b, l2b), l2a = l2b = z;
  }
  float finish(const float* row, int64_t n) const {
    const __m512 a = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(l0a, l1a), l2a), l3a);
    const __m512 b = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(l0b, l1b), l2b), l3b);
    const auto high = [](__m512 x) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)); };
    __m256 s0 = _mm512_castps512_ps256(a), s1 = high(a);
    const __m256 s2 = _mm512_castps512_ps256(b), s3 = high(b);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const int64_t nv = n / 8;
    for (int64_t v = groups * 4; v < nv; ++v)
      s0 = _mm256_add_ps(s0, _mm256_and_ps(_mm256_loadu_ps(row + 8 * v), absmask));
    s0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), s2), s3);
    float total = 0.f;
    for (int64_t e = nv * 8; e < n; ++e) total += std::fabs(row[e]);
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, s0);
    for (int k = 0; k < 8; ++k) total += lanes[k];
    return 0.f + total;
  }
};

// The sign words of a chunk (n = channels * K floats at src); lanes past n are 0. With a sum, the chunk's
// floats also go to it (a chunk is 64 K floats, a whole number of 32-float groups, except a row's last).
template <bool Sum>
inline void chunk_sign_words(const float* src, int64_t n, uint64_t* words, int64_t K, StreamSum8* sum) {
  const __m512 zero = _mm512_setzero_ps();
  // One word per 4 vectors, built in a register (an or into words[] in memory would chain every vector
  // through a store-to-load forward).
  for (int64_t j = 0; j * 64 < n; ++j) {
    uint64_t word = 0;
    __m512 v[4];
    for (int q = 0; q < 4; ++q) {
      const int64_t i = j * 64 + q * 16;
      if (i >= n) {  // (no pointer past the chunk is formed)
        v[q] = zero;
        continue;
      }
      const int64_t left = std::min<int64_t>(16, n - i);
      const __mmask16 m = __mmask16((uint32_t(1) << left) - 1);
      v[q] = _mm512_maskz_loadu_ps(m, src + i);
      // Ordered >= : -0.0 -> +1, NaN -> -1, as binarize_pack.
      word |= uint64_t(_mm512_mask_cmp_ps_mask(m, v[q], zero, _CMP_GE_OQ)) << (16 * q);
    }
    if (Sum) {  // (a group with a masked-off part is never a full one: feed ignores it)
      sum->feed(v[0], v[1]);
      sum->feed(v[2], v[3]);
    }
    words[j] = word;
  }
  for (int64_t j = (n + 63) / 64; j < K; ++j) words[j] = 0;
}

// A full chunk (64 channels x K taps, K a compile-time constant <= 9): the same words as
// chunk_sign_words, unmasked, each built from four compare masks in the mask registers, and handed
// over in two vectors (words 0-7, 8) instead of through memory: a vector load of words just written by
// scalar stores cannot be store-forwarded and waited for them to retire (~20 cycles a chunk).
template <int64_t K, bool Sum>
inline void full_chunk_sign_words(const float* src, __m512i& s0, __m512i& s1, StreamSum8* sum) {
  static_assert(K >= 1 && K <= 9, "two vectors of words");
  const __m512 zero = _mm512_setzero_ps();
  s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
  for (int64_t j = 0; j < K; ++j) {
    __m512 v[4];
    __mmask16 m[4];
    for (int q = 0; q < 4; ++q) {
      v[q] = _mm512_loadu_ps(src + j * 64 + q * 16);
      m[q] = _mm512_cmp_ps_mask(v[q], zero, _CMP_GE_OQ);  // ordered >= : -0.0 -> +1, NaN -> -1
    }
    if (Sum) {
      sum->feed(v[0], v[1]);
      sum->feed(v[2], v[3]);
    }
    const __mmask64 word = _mm512_kunpackd(__mmask64(_mm512_kunpackw(m[3], m[2])), __mmask64(_mm512_kunpackw(m[1], m[0])));
    const long long wv = static_cast<long long>(_cvtmask64_u64(word));
    if (j < 8)
      s0 = _mm512_mask_set1_epi64(s0, __mmask8(1u << j), wv);
    else
      s1 = _mm512_mask_set1_epi64(s1, __mmask8(1u << (j - 8)), wv);
  }
}

// |x| of 16 floats: ATen's Vectorized<float> of an AVX-512 build (sum_lanes 16).
struct V16 {
  using T = __m512;
  static constexpr int L = 16;
  static T zero() { return _mm512_setzero_ps(); }
  static T load_abs(const float* p) { return _mm512_abs_ps(_mm512_loadu_ps(p)); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static void store(float* d, T v) { _mm512_storeu_ps(d, v); }
};

// Tap words by bit shuffle (K <= 9; AVX512-VBMI2 + BITALG): channel c = 8 j + t of tap k is bit
// 8 j K + k + t K of the chunk's bit string; for K <= 9 the eight bits of group j lie in the 64-bit window
// starting at 8 j K + k, at offsets t K. Qword lane j of one vector gets that window (a double-qword
// shift of two permuted words), and one vpshufbitqmb picks offsets {0, K, .., 7 K} in every lane: the
// 64 mask bits are the tap's word. Four instructions a tap instead of ~9 pexts.
constexpr int64_t kShuffleMaxTaps = 9;
struct ShuffleTaps {
  __m512i lo[kShuffleMaxTaps], hi[kShuffleMaxTaps], shift[kShuffleMaxTaps], pick;
  int64_t K;
  explicit ShuffleTaps(int64_t K_) : K(K_) {
    alignas(64) int64_t l[8], h[8], sh[8];
    alignas(64) uint8_t pk[64];
    for (int64_t k = 0; k < K; ++k) {
      for (int j = 0; j < 8; ++j) {
        const int64_t b = 8 * j * K + k;
        l[j] = b >> 6, h[j] = (b >> 6) + 1, sh[j] = b & 63;  // word indices <= 9 (10 and up never: K <= 9)
      }
      lo[k] = _mm512_load_si512(l), hi[k] = _mm512_load_si512(h), shift[k] = _mm512_load_si512(sh);
    }
    for (int i = 0; i < 64; ++i) pk[i] = static_cast<uint8_t>((i % 8) * K);
    pick = _mm512_load_si512(pk);
  }
  __attribute__((target("avx512vbmi2,avx512bitalg"))) void operator()(const uint64_t* words, uint64_t* d,
                                                                      int64_t CW) const {
    // words[0, K) (zeros past the chunk's bits); lanes past K read as 0 and feed no picked bit.
    const __m512i s0 = _mm512_maskz_loadu_epi64(K >= 8 ? __mmask8(0xff) : __mmask8((1u << K) - 1), words);
    const __m512i s1 = K > 8 ? _mm512_maskz_loadu_epi64(__mmask8((1u << (K - 8)) - 1), words + 8)
                             : _mm512_setzero_si512();
    (*this)(s0, s1, d, CW);
  }
  // The chunk's words in registers (words 0-7 in s0, 8 in s1; zero lanes past K).
  __attribute__((target("avx512vbmi2,avx512bitalg"))) void operator()(__m512i s0, __m512i s1, uint64_t* d,
                                                                      int64_t CW) const {
    for (int64_t k = 0; k < K; ++k) {
      const __m512i a = _mm512_permutex2var_epi64(s0, lo[k], s1), b = _mm512_permutex2var_epi64(s0, hi[k], s1);
      d[k * CW] = _mm512_bitshuffle_epi64_mask(_mm512_shrdv_epi64(a, b, shift[k]), pick);
    }
  }
};

// KC > 0: the tap count known at compile time (3x3: the gather loops unroll). Taps: PextTaps / ShuffleTaps.
template <int64_t KC, class Taps>
inline void pack_weight_abs_impl(const float* w, int64_t Cin, int64_t Krt, uint64_t* dst, float* abs_sum,
                                 int sum_lanes, int64_t co_begin, int64_t co_end, int32_t* tap_pop,
                                 const Taps& taps) {
  const int64_t K = KC > 0 ? KC : Krt;
  const int64_t CW = xnor_words(Cin);
  uint64_t words[kPackWeightMaxTaps];
  const int64_t n = Cin * K;
  const bool stream = abs_sum && sum_lanes == 8;
  for (int64_t co = co_begin; co < co_end; ++co) {
    StreamSum8 sum(n);
    if (tap_pop)
      for (int64_t k = 0; k < K; ++k) tap_pop[co * K + k] = 0;
    for (int64_t cw = 0; cw < CW; ++cw) {
      const int64_t nc = std::min<int64_t>(64, Cin - cw * 64), off = co * n + cw * 64 * K;
      uint64_t* d = dst + co * K * CW + cw;
      if constexpr (KC > 0 && KC <= kShuffleMaxTaps && std::is_same_v<Taps, ShuffleTaps>) {
        if (nc == 64) {
          __m512i s0, s1;
          if (stream)
            full_chunk_sign_words<KC, true>(w + off, s0, s1, &sum);
          else
            full_chunk_sign_words<KC, false>(w + off, s0, s1, nullptr);
          taps(s0, s1, d, CW);
          if (tap_pop)
            for (int64_t k = 0; k < K; ++k) tap_pop[co * K + k] += static_cast<int32_t>(__builtin_popcountll(d[k * CW]));
          continue;
        }
      }
      if (stream)
        chunk_sign_words<true>(w + off, nc * K, words, K, &sum);
      else
        chunk_sign_words<false>(w + off, nc * K, words, K, nullptr);
      taps(words, d, CW);
      if (tap_pop)
        for (int64_t k = 0; k < K; ++k) tap_pop[co * K + k] += static_cast<int32_t>(__builtin_popcountll(d[k * CW]));
    }
    if (stream) {
      abs_sum[co] = sum.finish(w + co * n, n);
    } else if (abs_sum) {
      abs_sum[co] = aten_order_abs_sum<V16>(w + co * n, n);
    }
  }
}

__attribute__((target("bmi2"))) void pack_pext(const float* w, int64_t Cin, int64_t K, uint64_t* dst,
                                               float* abs_sum, int sum_lanes, int64_t co_begin, int64_t co_end,
                                               int32_t* tap_pop) {
  with_pext_taps(K, [&](auto kc, const PextTaps& taps) {
    pack_weight_abs_impl<decltype(kc)::value>(w, Cin, K, dst, abs_sum, sum_lanes, co_begin, co_end, tap_pop, taps);
  });
}

__attribute__((target("avx512vbmi2,avx512bitalg"))) void pack_shuffle(const float* w, int64_t Cin, int64_t K,
                                                                      uint64_t* dst, float* abs_sum, int sum_lanes,
                                                                      int64_t co_begin, int64_t co_end,
                                                                      int32_t* tap_pop) {
  const ShuffleTaps taps(K);
  if (K == 9)
    pack_weight_abs_impl<9>(w, Cin, K, dst, abs_sum, sum_lanes, co_begin, co_end, tap_pop, taps);
  else
    pack_weight_abs_impl<0>(w, Cin, K, dst, abs_sum, sum_lanes, co_begin, co_end, tap_pop, taps);
}

}  // namespace

bool pack_weight_shuffle_available() {
  static const bool ok = __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512bitalg");
  return ok;
}

// A contiguous float32 weight (Cout, Cin, K) -> sign words (Cout, K, CW) and, unless abs_sum is null,
// sum |w| per output channel into abs_sum (Cout) in ATen's order for sum_lanes (8 or 16); output
// channels [co_begin, co_end). A chunk of 64 input channels is 64 K contiguous floats: their sign bits,
// in memory order, fill K words, with tap k of channel c at bit c K + k; tap k's word is a bit gather of
// that string (ShuffleTaps where the CPU has it and K <= 9, else PextTaps). Replaces a strided pack
// (channel stride K); the sum of |w| per output channel (ATen's order) replaces an abs pass and ATen's mean.
// Reached only after the BMI2 check (pack_weight_abs_f32_available).
void pack_weight_abs_f32_avx512(const float* w, int64_t Cin, int64_t K, uint64_t* dst, float* abs_sum,
                                int sum_lanes, int64_t co_begin, int64_t co_end, int32_t* tap_pop, bool shuffle) {
  if (shuffle && K <= kShuffleMaxTaps && pack_weight_shuffle_available())
    pack_shuffle(w, Cin, K, dst, abs_sum, sum_lanes, co_begin, co_end, tap_pop);
  else
    pack_pext(w, Cin, K, dst, abs_sum, sum_lanes, co_begin, co_end, tap_pop);
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
