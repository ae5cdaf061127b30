// AVX-512 (F + BW + VL + VPOPCNTDQ) kernels of the XNOR convolution, called only when cpuid has them:
// the popcount GEMM (body in xnor_conv_avx512_kernel.h), float32 bit packing of NCHW / NHWC rows, and
// the register-only xor + popcount + add loop that measures the machine's limit for the GEMM.
#include <immintrin.h>

#include <algorithm>

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

namespace {

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

// The sign words of a chunk (n = channels * K floats at src; |w| to ab unless null); lanes past n are 0.
inline void chunk_sign_words(const float* src, int64_t n, float* ab, uint64_t* words, int64_t K) {
  const __m512 zero = _mm512_setzero_ps();
  // One word per 4 vectors, built in a register (an or into words[] in memory would chain every vector
  // through a store-to-load forward).
  for (int64_t j = 0; j * 64 < n; ++j) {
    uint64_t word = 0;
    for (int q = 0; q < 4; ++q) {
      const int64_t i = j * 64 + q * 16;
      if (i >= n) break;  // (no pointer past the chunk is formed)
      const int64_t left = std::min<int64_t>(16, n - i);
      const __mmask16 m = __mmask16((uint32_t(1) << left) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(m, src + i);
      // Ordered >= : -0.0 -> +1, NaN -> -1, as binarize_pack.
      word |= uint64_t(_mm512_mask_cmp_ps_mask(m, v, zero, _CMP_GE_OQ)) << (16 * q);
      if (ab) _mm512_mask_storeu_ps(ab + i, m, _mm512_abs_ps(v));
    }
    words[j] = word;
  }
  for (int64_t j = (n + 63) / 64; j < K; ++j) words[j] = 0;
}

// KC > 0: the tap count known at compile time (3x3: the gather loops unroll).
template <int64_t KC>
__attribute__((target("bmi2"))) void pack_weight_abs_impl(const float* w, int64_t Cin, int64_t Krt, uint64_t* dst,
                                                          float* absw, int64_t co_begin, int64_t co_end,
                                                          const TapGather& tg) {
  const int64_t K = KC > 0 ? KC : Krt;
  const int64_t CW = xnor_words(Cin);
  uint64_t words[kPackWeightMaxTaps];
  for (int64_t co = co_begin; co < co_end; ++co) {
    for (int64_t cw = 0; cw < CW; ++cw) {
      const int64_t nc = std::min<int64_t>(64, Cin - cw * 64), off = (co * Cin + cw * 64) * K;
      chunk_sign_words(w + off, nc * K, absw ? absw + off : nullptr, words, K);
      uint64_t* d = dst + co * K * CW + cw;
      for (int64_t k = 0; k < K; ++k) {
        uint64_t r = 0;
        for (int64_t j = k >> 6; j <= ((63 * K + k) >> 6); ++j) r |= _pext_u64(words[j], tg.mask[k][j]) << tg.shift[k][j];
        d[k * CW] = r;
      }
    }
  }
}

}  // namespace

// A contiguous float32 weight (Cout, Cin, K) -> sign words (Cout, K, CW) and |w| (Cout, Cin, K), output
// channels [co_begin, co_end). A chunk of 64 input channels is 64 K contiguous floats: their sign bits,
// in memory order, fill K words, with tap k of channel c at bit c K + k; tap k's word is a bit gather of
// that string, one pext per source word. Replaces a strided pack (channel stride K) and an abs pass.
// Reached only after the BMI2 check (pack_weight_abs_f32_available); BMI2 here too so the body inlines.
__attribute__((target("bmi2"))) void pack_weight_abs_f32_avx512(const float* w, int64_t Cin, int64_t K,
                                                                 uint64_t* dst, float* absw, int64_t co_begin,
                                                                 int64_t co_end) {
  if (K == 9) {
    static constexpr TapGather k3x3(9);
    pack_weight_abs_impl<9>(w, Cin, K, dst, absw, co_begin, co_end, k3x3);
  } else {
    const TapGather tg(K);  // ~29 KB of stack
    pack_weight_abs_impl<0>(w, Cin, K, dst, absw, co_begin, co_end, tg);
  }
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
