// AVX2 kernels of the XNOR convolution (called only when cpuid has AVX2 + POPCNT):
//  - the popcount GEMM over the prepared input (pixels as lanes): nibble-LUT vpshufb popcount (Mula)
//    with byte accumulators drained by vpsadbw (scalar POPCNT measured 1.9x slower in the old kernel),
//    and the register-only loop of its inner step (the AVX2 limit the benchmark reports against);
//  - float32 bit packing of NCHW rows (8-pixel x 64-channel sign-mask tiles transposed with
//    shift + vpmovmskb) and of NHWC rows (vmovmskps per 8 channels), to any output word strides.
#include <immintrin.h>

#include <cstdlib>
#include <cstring>

#include "core/xnor_conv.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,popcnt,bmi,bmi2")
namespace fastpose {
namespace core {
namespace {

inline __m256i popcnt_bytes(__m256i v, __m256i lut, __m256i m4) {
  const __m256i lo = _mm256_and_si256(v, m4);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

// OB output channels x PB vectors of 4 pixels (lanes are pixels, as in the AVX-512 kernel). Byte
// counters take at most 8 per K step, so they are drained into the 64-bit per-pixel sums (vpsadbw
// sums the 8 bytes of each lane: exactly one pixel's word) every 31 steps; the sums live in memory
// so the 16 ymm registers hold the byte counters, the operands and the LUT.
template <int OB, int PB>
void gemm_lut(const uint64_t* x, const int64_t* xoff, int nk, const uint64_t* w, int64_t wstride,
              const int64_t* woff, int32_t* S, int64_t ss) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1,
                                       2, 2, 3, 2, 3, 3, 4);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  alignas(32) int64_t sums[OB][PB][4] = {};
  for (int k0 = 0; k0 < nk; k0 += 31) {
    const int k1 = k0 + 31 < nk ? k0 + 31 : nk;
    __m256i acc[OB][PB];
    for (int o = 0; o < OB; ++o)
      for (int q = 0; q < PB; ++q) acc[o][q] = zero;
    for (int k = k0; k < k1; ++k) {
      const uint64_t* xp = x + xoff[k];
      const uint64_t* wp = w + woff[k];
      __m256i xv[PB];
      for (int q = 0; q < PB; ++q) xv[q] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp + 4 * q));
      for (int o = 0; o < OB; ++o) {
        const __m256i wv = _mm256_set1_epi64x(static_cast<long long>(wp[o * wstride]));
        for (int q = 0; q < PB; ++q)
          acc[o][q] = _mm256_add_epi8(acc[o][q], popcnt_bytes(_mm256_xor_si256(xv[q], wv), lut, m4));
      }
    }
    for (int o = 0; o < OB; ++o)
      for (int q = 0; q < PB; ++q) {
        __m256i* sp = reinterpret_cast<__m256i*>(sums[o][q]);
        _mm256_store_si256(sp, _mm256_add_epi64(_mm256_load_si256(sp), _mm256_sad_epu8(acc[o][q], zero)));
      }
  }
  for (int o = 0; o < OB; ++o)
    for (int q = 0; q < PB; ++q)
      for (int l = 0; l < 4; ++l) S[o * ss + 4 * q + l] = static_cast<int32_t>(sums[o][q][l]);
}

using GemmFn = void (*)(const uint64_t*, const int64_t*, int, const uint64_t*, int64_t, const int64_t*, int32_t*,
                        int64_t);

inline __m256 load_tail_ps(const float* p, int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), idx));
}

inline unsigned nonneg_mask8(__m256 v) {
  return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ)));
}

}  // namespace

void xnor_gemm_block_avx2(const uint64_t* x, const int64_t* xoff, int nk, const uint64_t* w, int64_t wstride,
                          const int64_t* woff, int nout, int npix, int32_t* S, int64_t s_ostride) {
  // 4 channels x 8 pixels; npix is a multiple of 8, so only the channel count has a remainder.
  static const GemmFn orem[4] = {nullptr, &gemm_lut<1, 2>, &gemm_lut<2, 2>, &gemm_lut<3, 2>};
  for (int q = 0; q < npix; q += 8) {
    int o = 0;
    for (; o + 4 <= nout; o += 4)
      gemm_lut<4, 2>(x + q, xoff, nk, w + o * wstride, wstride, woff, S + o * s_ostride + q, s_ostride);
    if (o < nout) orem[nout - o](x + q, xoff, nk, w + o * wstride, wstride, woff, S + o * s_ostride + q, s_ostride);
  }
}

int64_t xnor_popcount_peak_avx2(int64_t iters) {
  // The GEMM's inner step (xor, nibble-LUT popcount, byte add) on 4 independent byte accumulators
  // (2 x 2 operand pairs: more make GCC spill operands to the stack; the chains are one vpaddb long,
  // so 4 are enough to keep the ports busy); 31 steps between vpsadbw drains, as in the GEMM.
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1,
                                       2, 2, 3, 2, 3, 3, 4);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  constexpr int A = 4, X = 2;
  __m256i acc[A], v[X], wv[A / X], sum = _mm256_setzero_si256();
  for (int i = 0; i < X; ++i) v[i] = _mm256_set1_epi64x(0x9e3779b97f4a7c15ll * (i + 1));
  for (int i = 0; i < A / X; ++i) wv[i] = _mm256_set1_epi64x(0x0123456789abcdefll + i);
  int64_t done = 0;
  for (int64_t it = 0; it < iters; it += 31) {
    for (int i = 0; i < A; ++i) acc[i] = _mm256_setzero_si256();
    for (int s = 0; s < 31; ++s) {
      for (int i = 0; i < X; ++i) __asm__ volatile("" : "+x"(v[i]));
      for (int i = 0; i < A; ++i)
        acc[i] = _mm256_add_epi8(acc[i], popcnt_bytes(_mm256_xor_si256(v[i % X], wv[i / X]), lut, m4));
    }
    for (int i = 0; i < A; ++i) sum = _mm256_add_epi64(sum, _mm256_sad_epu8(acc[i], _mm256_setzero_si256()));
    done += 31;
  }
  alignas(32) int64_t t[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), sum);
  volatile int64_t sink = t[0];
  (void)sink;
  return done * A * 256;
}

// 8-pixel x 64-channel sign-mask tiles transposed with shift + vpmovmskb. Each channel's whole row
// (up to 1024 pixels) is compared before the next channel: one contiguous stream per channel, where
// tile-by-tile order would read 64 streams 4 KB+ apart and defeat the prefetchers.
void pack_row_nchw_f32_avx2(const float* src, int64_t C, int64_t W, int64_t sc, uint64_t* dst, int64_t ps,
                            int64_t ks) {
  constexpr int64_t kMaxTiles = 128;
  alignas(32) uint8_t B[kMaxTiles][64];
  const int64_t CW = xnor_words(C);
  for (int64_t wb = 0; wb < W; wb += 8 * kMaxTiles) {
    const int64_t wn = W - wb < 8 * kMaxTiles ? W - wb : 8 * kMaxTiles;
    const int64_t tiles = (wn + 7) / 8;
    const int64_t tail = wn - 8 * (tiles - 1);
    for (int64_t k = 0; k < CW; ++k) {
      const int64_t c0 = 64 * k;
      const int64_t nc = C - c0 < 64 ? C - c0 : 64;
      for (int64_t c = 0; c < nc; ++c) {
        const float* s = src + (c0 + c) * sc + wb;
        for (int64_t t = 0; t + 1 < tiles; ++t) B[t][c] = static_cast<uint8_t>(nonneg_mask8(_mm256_loadu_ps(s + 8 * t)));
        const int64_t t = tiles - 1;
        B[t][c] = static_cast<uint8_t>(nonneg_mask8(tail == 8 ? _mm256_loadu_ps(s + 8 * t) : load_tail_ps(s + 8 * t, tail)));
      }
      for (int64_t t = 0; t < tiles; ++t) {
        for (int64_t c = nc; c < 64; ++c) B[t][c] = 0;
        // Bit p of byte c -> bit c of pixel p's word: shift bit p to the top of each byte, vpmovmskb.
        __m256i lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(B[t]));
        __m256i hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(B[t] + 32));
        uint64_t words[8];
        for (int p = 7; p >= 0; --p) {
          words[p] = static_cast<uint32_t>(_mm256_movemask_epi8(lo)) |
                     (static_cast<uint64_t>(static_cast<uint32_t>(_mm256_movemask_epi8(hi))) << 32);
          lo = _mm256_slli_epi16(lo, 1);
          hi = _mm256_slli_epi16(hi, 1);
        }
        const int64_t nw = t + 1 < tiles ? 8 : tail;
        uint64_t* d = dst + (wb + 8 * t) * ps + k * ks;
        for (int64_t p = 0; p < nw; ++p) d[p * ps] = words[p];
      }
    }
  }
}

void pack_row_nhwc_f32_avx2(const float* src, int64_t C, int64_t W, int64_t sw, uint64_t* dst, int64_t ps,
                            int64_t ks) {
  const int64_t CW = xnor_words(C);
  for (int64_t w = 0; w < W; ++w) {
    const float* s = src + w * sw;
    uint64_t* d = dst + w * ps;
    for (int64_t k = 0; k < CW; ++k) {
      uint64_t word = 0;
      const int64_t c0 = 64 * k;
      const int64_t nc = C - c0 < 64 ? C - c0 : 64;
      if (nc == 64) {
        for (int g = 0; g < 8; ++g)
          word |= static_cast<uint64_t>(nonneg_mask8(_mm256_loadu_ps(s + c0 + 8 * g))) << (8 * g);
      } else {
        for (int64_t g = 0; 8 * g < nc; ++g) {
          const int64_t m = nc - 8 * g < 8 ? nc - 8 * g : 8;
          const __m256 v = m == 8 ? _mm256_loadu_ps(s + c0 + 8 * g) : load_tail_ps(s + c0 + 8 * g, m);
          word |= static_cast<uint64_t>(nonneg_mask8(v) & ((1u << m) - 1u)) << (8 * g);
        }
      }
      d[k * ks] = word;
    }
  }
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
