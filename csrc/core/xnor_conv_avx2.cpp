// AVX2 kernels of the XNOR convolution (called only when cpuid has AVX2 + POPCNT):
//  - the popcount block, two ways: the nibble-LUT vpshufb popcount (Mula) with byte accumulators
//    drained by vpsadbw, and scalar POPCNT on 64-bit words. FASTPOSE_XNOR_AVX2=lut|popcnt picks one
//    (for measurements); the default is the one that measured faster on the development machine.
//  - float32 bit packing of NCHW rows (8-pixel x 64-channel sign-mask tiles transposed with
//    shift + vpmovmskb) and of NHWC rows (vmovmskps per 8 channels).
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

inline __m256i tail_mask(int64_t tail) {
  // lanes < tail get all ones (maskload reads only those; the others read as zero).
  const __m256i idx = _mm256_setr_epi64x(0, 1, 2, 3);
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(tail), idx);
}

inline __m256i popcnt_bytes(__m256i v, __m256i lut, __m256i m4) {
  const __m256i lo = _mm256_and_si256(v, m4);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

inline int64_t hsum64(__m256i v) {
  const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

// OB output channels x PB pixels; byte counters take at most 8 per 256-bit chunk, so they are drained
// into 64-bit sums (vpsadbw) at least every 31 chunks.
template <int OB, int PB>
void block_lut(const uint64_t* x, int64_t xstride, const uint64_t* w, int64_t wstride, const int64_t* xoff,
               const int64_t* woff, int nseg, int64_t L, int32_t* dots, int64_t dstride) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1,
                                       2, 2, 3, 2, 3, 3, 4);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc[OB][PB], sum[OB][PB];
  for (int o = 0; o < OB; ++o)
    for (int q = 0; q < PB; ++q) acc[o][q] = sum[o][q] = zero;
  const int64_t nfull = L >> 2, tail = L & 3;
  const __m256i tm = tail_mask(tail);
  int pending = 0;
  for (int g = 0; g < nseg; ++g) {
    const uint64_t* xs = x + xoff[g];
    const uint64_t* ws = w + woff[g];
    for (int64_t c = 0; c <= nfull; ++c) {
      __m256i xv[PB];
      if (c < nfull) {
        for (int q = 0; q < PB; ++q)
          xv[q] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs + q * xstride + 4 * c));
      } else {
        if (!tail) break;
        for (int q = 0; q < PB; ++q)
          xv[q] = _mm256_maskload_epi64(reinterpret_cast<const long long*>(xs + q * xstride + 4 * c), tm);
      }
      for (int o = 0; o < OB; ++o) {
        const __m256i wv =
            c < nfull ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ws + o * wstride + 4 * c))
                      : _mm256_maskload_epi64(reinterpret_cast<const long long*>(ws + o * wstride + 4 * c), tm);
        for (int q = 0; q < PB; ++q)
          acc[o][q] = _mm256_add_epi8(acc[o][q], popcnt_bytes(_mm256_xor_si256(xv[q], wv), lut, m4));
      }
      if (++pending == 31) {
        for (int o = 0; o < OB; ++o)
          for (int q = 0; q < PB; ++q) {
            sum[o][q] = _mm256_add_epi64(sum[o][q], _mm256_sad_epu8(acc[o][q], zero));
            acc[o][q] = zero;
          }
        pending = 0;
      }
    }
  }
  for (int o = 0; o < OB; ++o)
    for (int q = 0; q < PB; ++q) {
      sum[o][q] = _mm256_add_epi64(sum[o][q], _mm256_sad_epu8(acc[o][q], zero));
      dots[o * dstride + q] = static_cast<int32_t>(hsum64(sum[o][q]));
    }
}

template <int OB, int PB>
void block_popcnt(const uint64_t* x, int64_t xstride, const uint64_t* w, int64_t wstride, const int64_t* xoff,
                  const int64_t* woff, int nseg, int64_t L, int32_t* dots, int64_t dstride) {
  uint64_t acc[OB][PB];
  for (int o = 0; o < OB; ++o)
    for (int q = 0; q < PB; ++q) acc[o][q] = 0;
  for (int g = 0; g < nseg; ++g) {
    const uint64_t* xs = x + xoff[g];
    const uint64_t* ws = w + woff[g];
    for (int64_t i = 0; i < L; ++i) {
      uint64_t xv[PB];
      for (int q = 0; q < PB; ++q) xv[q] = xs[q * xstride + i];
      for (int o = 0; o < OB; ++o) {
        const uint64_t wv = ws[o * wstride + i];
        for (int q = 0; q < PB; ++q) acc[o][q] += static_cast<uint64_t>(_mm_popcnt_u64(xv[q] ^ wv));
      }
    }
  }
  for (int o = 0; o < OB; ++o)
    for (int q = 0; q < PB; ++q) dots[o * dstride + q] = static_cast<int32_t>(acc[o][q]);
}

using BlockFn = void (*)(const uint64_t*, int64_t, const uint64_t*, int64_t, const int64_t*, const int64_t*, int,
                         int64_t, int32_t*, int64_t);

// Tiles the (nout x npix) block with OB x PB register blocks (remainders with smaller blocks).
template <int OB, int PB>
inline void tile(BlockFn full, BlockFn orem[OB], BlockFn prem[PB], BlockFn one, const uint64_t* x,
                 int64_t xstride, int npix, const uint64_t* w, int64_t wstride, int nout, const int64_t* xoff,
                 const int64_t* woff, int nseg, int64_t L, int32_t* dots, int64_t dstride) {
  (void)one;
  int o = 0;
  for (; o + OB <= nout; o += OB) {
    int q = 0;
    for (; q + PB <= npix; q += PB)
      full(x + q * xstride, xstride, w + o * wstride, wstride, xoff, woff, nseg, L, dots + o * dstride + q, dstride);
    if (q < npix)  // PB-remainder pixels, OB channels
      prem[npix - q](x + q * xstride, xstride, w + o * wstride, wstride, xoff, woff, nseg, L, dots + o * dstride + q,
                     dstride);
  }
  if (o < nout) {
    BlockFn f = orem[nout - o];  // (nout - o) channels x 1 pixel
    for (int q = 0; q < npix; ++q)
      f(x + q * xstride, xstride, w + o * wstride, wstride, xoff, woff, nseg, L, dots + o * dstride + q, dstride);
  }
}

void run_lut(const uint64_t* x, int64_t xstride, int npix, const uint64_t* w, int64_t wstride, int nout,
             const int64_t* xoff, const int64_t* woff, int nseg, int64_t L, int32_t* dots, int64_t dstride) {
  BlockFn orem[4] = {nullptr, &block_lut<1, 1>, &block_lut<2, 1>, &block_lut<3, 1>};
  BlockFn prem[2] = {nullptr, &block_lut<4, 1>};
  tile<4, 2>(&block_lut<4, 2>, orem, prem, nullptr, x, xstride, npix, w, wstride, nout, xoff, woff, nseg, L, dots,
             dstride);
}

void run_popcnt(const uint64_t* x, int64_t xstride, int npix, const uint64_t* w, int64_t wstride, int nout,
                const int64_t* xoff, const int64_t* woff, int nseg, int64_t L, int32_t* dots, int64_t dstride) {
  BlockFn orem[4] = {nullptr, &block_popcnt<1, 1>, &block_popcnt<2, 1>, &block_popcnt<3, 1>};
  BlockFn prem[2] = {nullptr, &block_popcnt<4, 1>};
  tile<4, 2>(&block_popcnt<4, 2>, orem, prem, nullptr, x, xstride, npix, w, wstride, nout, xoff, woff, nseg, L,
             dots, dstride);
}

inline __m256 load_tail_ps(const float* p, int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), idx));
}

inline unsigned nonneg_mask8(__m256 v) {
  return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ)));
}

}  // namespace

void xnor_popcount_block_avx2(const uint64_t* x, int64_t xstride, int npix, const uint64_t* w, int64_t wstride,
                              int nout, const int64_t* xoff, const int64_t* woff, int nseg, int64_t L,
                              int32_t* dots, int64_t dots_ostride) {
  static const bool use_lut = [] {
    const char* e = std::getenv("FASTPOSE_XNOR_AVX2");
    return !(e && std::strcmp(e, "popcnt") == 0);
  }();
  if (use_lut)
    run_lut(x, xstride, npix, w, wstride, nout, xoff, woff, nseg, L, dots, dots_ostride);
  else
    run_popcnt(x, xstride, npix, w, wstride, nout, xoff, woff, nseg, L, dots, dots_ostride);
}

void pack_row_nchw_f32_avx2(const float* src, int64_t C, int64_t W, int64_t sc, uint64_t* dst, int64_t CW) {
  alignas(32) uint8_t B[64];
  for (int64_t k = 0; k < CW; ++k) {
    const int64_t c0 = 64 * k;
    const int64_t nc = C - c0 < 64 ? C - c0 : 64;
    for (int64_t w0 = 0; w0 < W; w0 += 8) {
      const int64_t nw = W - w0 < 8 ? W - w0 : 8;
      for (int64_t c = 0; c < nc; ++c) {
        const float* s = src + (c0 + c) * sc + w0;
        B[c] = static_cast<uint8_t>(nonneg_mask8(nw == 8 ? _mm256_loadu_ps(s) : load_tail_ps(s, nw)));
      }
      for (int64_t c = nc; c < 64; ++c) B[c] = 0;
      // Bit p of byte c -> bit c of pixel p's word: shift bit p to the top of each byte, vpmovmskb.
      __m256i lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(B));
      __m256i hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(B + 32));
      uint64_t words[8];
      for (int p = 7; p >= 0; --p) {
        words[p] = static_cast<uint32_t>(_mm256_movemask_epi8(lo)) |
                   (static_cast<uint64_t>(static_cast<uint32_t>(_mm256_movemask_epi8(hi))) << 32);
        lo = _mm256_slli_epi16(lo, 1);
        hi = _mm256_slli_epi16(hi, 1);
      }
      for (int64_t p = 0; p < nw; ++p) dst[(w0 + p) * CW + k] = words[p];
    }
  }
}

void pack_row_nhwc_f32_avx2(const float* src, int64_t C, int64_t W, int64_t sw, uint64_t* dst, int64_t CW) {
  for (int64_t w = 0; w < W; ++w) {
    const float* s = src + w * sw;
    uint64_t* d = dst + w * CW;
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
      d[k] = word;
    }
  }
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
