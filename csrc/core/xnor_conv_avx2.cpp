// AVX2 kernels of the XNOR convolution (called only when cpuid has AVX2 + POPCNT):
//  - the popcount GEMM over the prepared input (pixels as lanes), on nibble planes of x against
//    weight-specific vpshufb tables (see gemm_nibble), and the register-only loop of its inner step
//    (the AVX2 limit the benchmark reports against);
//  - float32 bit packing of NCHW rows (8-pixel x 64-channel sign-mask tiles transposed with
//    shift + vpmovmskb) and of NHWC rows (vmovmskps per 8 channels), to any output word strides.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/xnor_conv.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,popcnt,bmi,bmi2")
namespace fastpose {
namespace core {
namespace {

// The popcount GEMM runs on a nibble-plane form of x and weight-specific lookup tables, so one
// vpshufb + vpaddb pair does 128 binary MACs (16 pixels x 2 nibbles of 4 bits), against 256 MACs per
// 8 ops (xor, 2 and, shift, 2 pshufb, 2 add) for the plain nibble-LUT popcount of x ^ w (2x fewer ops):
//  - x: 16 pixels' words of one K step become 8 vectors, vector j holding byte j of every word:
//    low nibbles in the low 128-bit lane, high nibbles in the high lane, one pixel per byte;
//  - w: popc(n ^ wn) over n is a 16-entry table that depends only on the weight nibble wn, so the
//    32-byte table pair for weight byte b (low lane: low nibble, high lane: high nibble) is one of 256
//    (nibble_tables(), 8 KB, L1-resident); vpshufb(table of w byte j, x vector j) is popc(x ^ w) per nibble.
// Byte counters gain at most 4 per lookup, 32 per K step: drained into 16-bit sums every 7 steps.
struct NibbleTables {
  alignas(32) uint8_t t[256][32];
  NibbleTables() {
    for (int b = 0; b < 256; ++b)
      for (int i = 0; i < 16; ++i) {
        t[b][i] = static_cast<uint8_t>(__builtin_popcount(static_cast<unsigned>(i ^ (b & 15))));
        t[b][16 + i] = static_cast<uint8_t>(__builtin_popcount(static_cast<unsigned>(i ^ (b >> 4))));
      }
  }
};
// Built on first use, never at load time: this code is compiled for AVX2 and the library also loads
// on CPUs without it.
const NibbleTables& nibble_tables() {
  static const NibbleTables t;
  return t;
}

constexpr int kDrainSteps = 7;                       // 7 steps x 32 <= 255 per byte counter
constexpr int kChunkSteps = kDrainSteps * 292;       // 16-bit sums: <= 32 x 2044 <= 65535 per lane

// Pixel order of the bytes of a nibble-plane lane (from the transpose below): byte b is pixel kPix[b].
// (0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15)

// Nibble planes of 16 words src[0..n) (n = 8 or 16; missing words read as 0): dst[j * stride], j < 8.
// src2 (with n = 16): words 8..15 from src2[0..8) instead (two 8-pixel rows as one group).
inline void nibble_planes16(const uint64_t* src, int n, __m256i* dst, int64_t stride, const uint64_t* src2 = nullptr) {
  // In-lane: a lane's two words a, b -> 16-bit units (a[j], b[j]) for bytes j = 0..7.
  const __m256i pair = _mm256_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 0, 8, 1, 9, 2, 10, 3,
                                        11, 4, 12, 5, 13, 6, 14, 7, 15);
  __m256i y[4];
  for (int m = 0; m < 4; ++m)
    y[m] = 4 * m < n ? _mm256_shuffle_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                                               m >= 2 && src2 ? src2 + 4 * (m - 2) : src + 4 * m)), pair)
                     : _mm256_setzero_si256();
  // 8 x 8 transpose of the 16-bit units (lane l of y[m] is word pair 2m + l): b[i] holds bytes 2i and
  // 2i + 1 of the even pairs in its low lane and of the odd pairs in its high lane.
  const __m256i a0 = _mm256_unpacklo_epi16(y[0], y[1]), a1 = _mm256_unpackhi_epi16(y[0], y[1]);
  const __m256i a2 = _mm256_unpacklo_epi16(y[2], y[3]), a3 = _mm256_unpackhi_epi16(y[2], y[3]);
  const __m256i b[4] = {_mm256_unpacklo_epi32(a0, a2), _mm256_unpackhi_epi32(a0, a2), _mm256_unpacklo_epi32(a1, a3),
                        _mm256_unpackhi_epi32(a1, a3)};
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  for (int i = 0; i < 4; ++i) {
    const __m256i t = _mm256_permute4x64_epi64(b[i], 0xd8);  // lane 0: byte 2i of all 16 words, lane 1: 2i + 1
    const __m256i lo = _mm256_and_si256(t, m4), hi = _mm256_and_si256(_mm256_srli_epi16(t, 4), m4);
    dst[(2 * i) * stride] = _mm256_permute2x128_si256(lo, hi, 0x20);
    dst[(2 * i + 1) * stride] = _mm256_permute2x128_si256(lo, hi, 0x31);
  }
}

// OB output channels x PB groups of 16 pixels. xb: [k][j][PB] nibble planes; off: byte offsets into
// nibble_tables(), [o][k][j] with o stride ostride; npix_last: valid pixels of the last group (8 or 16).
template <int OB, int PB>
void gemm_nibble(const __m256i* xb, int nk, const uint16_t* off, int64_t ostride, int32_t* S, int64_t ss,
                 int npix_last) {
  const char* T = reinterpret_cast<const char*>(nibble_tables().t);
  const __m256i zero = _mm256_setzero_si256();
  for (int c0 = 0; c0 < nk; c0 += kChunkSteps) {
    const int c1 = c0 + kChunkSteps < nk ? c0 + kChunkSteps : nk;
    __m256i s16[OB][PB][2];
    for (int o = 0; o < OB; ++o)
      for (int g = 0; g < PB; ++g) s16[o][g][0] = s16[o][g][1] = zero;
    for (int k0 = c0; k0 < c1; k0 += kDrainSteps) {
      const int k1 = k0 + kDrainSteps < c1 ? k0 + kDrainSteps : c1;
      __m256i acc[OB][PB];
      for (int o = 0; o < OB; ++o)
        for (int g = 0; g < PB; ++g) acc[o][g] = zero;
      const auto step = [&](const __m256i* xk, const uint16_t* ok, int j) __attribute__((always_inline)) {
        __m256i xv[PB];
        for (int g = 0; g < PB; ++g) xv[g] = _mm256_load_si256(xk + g);
        for (int o = 0; o < OB; ++o) {
          const __m256i t = _mm256_load_si256(reinterpret_cast<const __m256i*>(T + ok[o * ostride + j]));
          for (int g = 0; g < PB; ++g) acc[o][g] = _mm256_add_epi8(acc[o][g], _mm256_shuffle_epi8(t, xv[g]));
        }
        // Without this GCC 12 copies every accumulator once per step (vpaddb into a temporary + vmovdqa).
        for (int o = 0; o < OB; ++o)
          for (int g = 0; g < PB; ++g) __asm__("" : "+x"(acc[o][g]));
      };
      if constexpr (PB == 2) {
        // The 8 byte planes of a K step unrolled: constant displacements for the planes and the table
        // offsets, where the index arithmetic made the loop dispatch-bound (~35 instructions a plane):
        // 5-6% faster at Cin >= 128. (The 8 x 1 block, rows of 16 pixels, was 20% slower so.)
        for (int k = k0; k < k1; ++k) {
          const __m256i* xk = xb + 8 * k * PB;
          const uint16_t* ok = off + 8 * k;
#pragma GCC unroll 8
          for (int j = 0; j < 8; ++j) step(xk + j * PB, ok, j);
        }
      } else {
        for (int kj = 8 * k0; kj < 8 * k1; ++kj) step(xb + kj * PB, off, kj);
      }
      for (int o = 0; o < OB; ++o)
        for (int g = 0; g < PB; ++g) {
          s16[o][g][0] = _mm256_add_epi16(s16[o][g][0], _mm256_unpacklo_epi8(acc[o][g], zero));
          s16[o][g][1] = _mm256_add_epi16(s16[o][g][1], _mm256_unpackhi_epi8(acc[o][g], zero));
        }
    }
    // Per pixel: the two lanes (low and high nibbles) added; bytes 0-7 are pixels 0,1,4,5,8,9,12,13
    // and bytes 8-15 pixels 2,3,6,7,10,11,14,15, so interleaving 32-bit pairs restores pixel order.
    for (int o = 0; o < OB; ++o)
      for (int g = 0; g < PB; ++g) {
        // (lanes added in 32 bits: each may hold up to 32 x kChunkSteps)
        const __m128i lo0 = _mm256_castsi256_si128(s16[o][g][0]), lo1 = _mm256_extracti128_si256(s16[o][g][0], 1);
        const __m128i hi0 = _mm256_castsi256_si128(s16[o][g][1]), hi1 = _mm256_extracti128_si256(s16[o][g][1], 1);
        __m256i r[2] = {_mm256_add_epi32(_mm256_cvtepu16_epi32(_mm_unpacklo_epi32(lo0, hi0)),
                                         _mm256_cvtepu16_epi32(_mm_unpacklo_epi32(lo1, hi1))),
                        _mm256_add_epi32(_mm256_cvtepu16_epi32(_mm_unpackhi_epi32(lo0, hi0)),
                                         _mm256_cvtepu16_epi32(_mm_unpackhi_epi32(lo1, hi1)))};
        const int nh = g + 1 < PB || npix_last == 16 ? 2 : 1;
        for (int h = 0; h < nh; ++h) {
          __m256i* sp = reinterpret_cast<__m256i*>(S + o * ss + 16 * g + 8 * h);
          if (c0 > 0) r[h] = _mm256_add_epi32(r[h], _mm256_loadu_si256(sp));
          _mm256_storeu_si256(sp, r[h]);
        }
      }
  }
}

using GemmFn = void (*)(const __m256i*, int, const uint16_t*, int64_t, int32_t*, int64_t, int);


inline __m256 load_tail_ps(const float* p, int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), idx));
}

inline unsigned nonneg_mask8(__m256 v) {
  return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ)));
}

}  // namespace

namespace {
// Table offsets of channels o < nout, steps k < nk (weight word w[o * wstride + (woff ? woff[k] : k)]).
inline void gemm_tables(const uint64_t* w, int64_t wstride, const int64_t* woff, int nout, int nk, uint16_t* off,
                        int64_t ostride) {
  for (int o = 0; o < nout; ++o) {
    const uint64_t* wo = w + o * wstride;
    uint16_t* d = off + o * ostride;
    int k = 0;
    for (; k + 2 <= nk; k += 2) {
      // Two weight words -> 16 offsets (byte value x 32).
      const __m128i v = _mm_set_epi64x(static_cast<long long>(wo[woff ? woff[k + 1] : k + 1]),
                                       static_cast<long long>(wo[woff ? woff[k] : k]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + 8 * k), _mm256_slli_epi16(_mm256_cvtepu8_epi16(v), 5));
    }
    for (; k < nk; ++k)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 8 * k),
                       _mm_slli_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(wo[woff ? woff[k] : k]))), 5));
  }
}
}  // namespace

void xnor_gemm_tables_avx2(const uint64_t* w, int64_t wstride, int nout, int nsteps, uint16_t* off, int64_t ostride) {
  gemm_tables(w, wstride, nullptr, nout, nsteps, off, ostride);
}

void xnor_gemm_block_avx2(const uint64_t* x, const int64_t* xoff, int nk, const uint64_t* w, int64_t wstride,
                          const int64_t* woff, int nout, int npix, int32_t* S, int64_t s_ostride,
                          const uint16_t* tables, int64_t tables_ostride, int64_t row2) {
  // Register blocks: 4 channels x 2 groups of 16 pixels (32 pixels), or 8 channels x 1 group for the
  // last group of a row (fewer than 32 pixels left); npix is a multiple of 8, so a group may be half full.
  constexpr int kOB2 = 4, kOB1 = 8;
  static const GemmFn fn2[kOB2] = {&gemm_nibble<1, 2>, &gemm_nibble<2, 2>, &gemm_nibble<3, 2>, &gemm_nibble<4, 2>};
  static const GemmFn fn1[kOB1] = {&gemm_nibble<1, 1>, &gemm_nibble<2, 1>, &gemm_nibble<3, 1>, &gemm_nibble<4, 1>,
                                   &gemm_nibble<5, 1>, &gemm_nibble<6, 1>, &gemm_nibble<7, 1>, &gemm_nibble<8, 1>};
  // Per-thread scratch: table offsets of every (channel, step, byte) and the nibble planes of one pixel block.
  thread_local std::vector<uint16_t> off;
  thread_local std::vector<uint64_t> xbuf;  // __m256i storage, aligned below
  const int64_t nkj = 8 * static_cast<int64_t>(nk);
  if (xbuf.size() < static_cast<size_t>(8 * nkj + 4)) xbuf.resize(8 * nkj + 4);
  __m256i* xb = reinterpret_cast<__m256i*>((reinterpret_cast<uintptr_t>(xbuf.data()) + 31) & ~uintptr_t(31));
  const uint16_t* offs = tables;
  int64_t tstride = tables_ostride;
  if (!offs) {
    if (off.size() < static_cast<size_t>(nout * nkj)) off.resize(nout * nkj);
    gemm_tables(w, wstride, woff, nout, nk, off.data(), nkj);
    offs = off.data(), tstride = nkj;
  }
  if (row2 > 0 && npix == 16) {
    // Two rows of 16 as one block of 32 pixels: group 0 the first row, group 1 the second.
    for (int k = 0; k < nk; ++k)
      for (int g = 0; g < 2; ++g) nibble_planes16(x + xoff[k] + g * row2, 16, xb + 16 * k + g, 2);
    for (int o = 0; o < nout; o += kOB2) {
      const int no = nout - o < kOB2 ? nout - o : kOB2;
      fn2[no - 1](xb, nk, offs + o * tstride, tstride, S + o * s_ostride, s_ostride, 16);
    }
    return;
  }
  if (row2 > 0 && npix == 8) {
    // Two rows of 8 as one full group of 16 (a lone 8-pixel row fills half of one).
    for (int k = 0; k < nk; ++k) nibble_planes16(x + xoff[k], 16, xb + 8 * k, 1, x + xoff[k] + row2);
    for (int o = 0; o < nout; o += kOB1) {
      const int no = nout - o < kOB1 ? nout - o : kOB1;
      fn1[no - 1](xb, nk, offs + o * tstride, tstride, S + o * s_ostride, s_ostride, 16);
    }
    return;
  }
  for (int q = 0; q < npix;) {
    const int left = npix - q;
    const int pb = left > 16 ? 2 : 1;
    const int last = left >= 16 * pb ? 16 : left - 16 * (pb - 1);  // valid pixels of the block's last group
    for (int k = 0; k < nk; ++k)
      for (int g = 0; g < pb; ++g)
        nibble_planes16(x + xoff[k] + q + 16 * g, g + 1 < pb ? 16 : last, xb + 8 * pb * k + g, pb);
    const int ob = pb == 2 ? kOB2 : kOB1;
    for (int o = 0; o < nout; o += ob) {
      const int no = nout - o < ob ? nout - o : ob;
      const GemmFn f = pb == 2 ? fn2[no - 1] : fn1[no - 1];
      f(xb, nk, offs + o * tstride, tstride, S + o * s_ostride + q, s_ostride, last);
    }
    q += 16 * (pb - 1) + last;
  }
}

int64_t xnor_popcount_peak_avx2(int64_t iters) {
  // The GEMM's inner step (vpshufb of a weight table by a nibble-plane vector + vpaddb into a byte
  // counter: 128 binary MACs) on 8 independent counters (2 tables x 4 planes, as in the 4 x 2 block),
  // drained every 56 steps as in the GEMM.
  __m256i acc[8], xv[4], t[2], sum = _mm256_setzero_si256();
  for (int i = 0; i < 4; ++i) xv[i] = _mm256_set1_epi64x(0x0f0e0d0c0b0a0908ll + 0x0101010101010101ll * i);
  for (int i = 0; i < 2; ++i) t[i] = _mm256_load_si256(reinterpret_cast<const __m256i*>(nibble_tables().t[37 * i + 5]));
  int64_t done = 0;
  for (int64_t it = 0; it < iters; it += 8 * kDrainSteps) {
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_si256();
    for (int s = 0; s < 8 * kDrainSteps; ++s) {
      for (int i = 0; i < 4; ++i) __asm__ volatile("" : "+x"(xv[i]));
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_add_epi8(acc[i], _mm256_shuffle_epi8(t[i / 4], xv[i % 4]));
      for (int i = 0; i < 8; ++i) __asm__("" : "+x"(acc[i]));
    }
    for (int i = 0; i < 8; ++i) sum = _mm256_add_epi64(sum, _mm256_sad_epu8(acc[i], _mm256_setzero_si256()));
    done += 8 * kDrainSteps;
  }
  alignas(32) int64_t r[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(r), sum);
  volatile int64_t sink = r[0];
  (void)sink;
  return done * 8 * 128;
}

// 8-pixel x 64-channel sign-mask tiles transposed with shift + vpmovmskb. Channels go through their
// whole row (up to 1024 pixels) four at a time: four contiguous streams, where tile-by-tile order would
// read 64 streams 4 KB+ apart and defeat the prefetchers (and one at a time restarts them per page).
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
      // Four channels at a time: four sequential streams in flight (see the AVX-512 form).
      for (int64_t c = 0; c < nc; c += 4) {
        const int ng = nc - c < 4 ? static_cast<int>(nc - c) : 4;
        const float* s = src + (c0 + c) * sc + wb;
        for (int64_t t = 0; t + 1 < tiles; ++t)
          for (int i = 0; i < ng; ++i)
            B[t][c + i] = static_cast<uint8_t>(nonneg_mask8(_mm256_loadu_ps(s + i * sc + 8 * t)));
        const int64_t t = tiles - 1;
        for (int i = 0; i < ng; ++i)
          B[t][c + i] = static_cast<uint8_t>(
              nonneg_mask8(tail == 8 ? _mm256_loadu_ps(s + i * sc + 8 * t) : load_tail_ps(s + i * sc + 8 * t, tail)));
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

namespace {

#include "core/xnor_pack_weight_kernel.h"

// |x| of 8 floats: ATen's Vectorized<float> of an AVX2 (or default) build (sum_lanes 8).
struct V8 {
  using T = __m256;
  static constexpr int L = 8;
  static T zero() { return _mm256_setzero_ps(); }
  static T load_abs(const float* p) {
    return _mm256_and_ps(_mm256_loadu_ps(p), _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static void store(float* d, T v) { _mm256_storeu_ps(d, v); }
};

// 16 lanes as two 8-lane halves: lane-wise the same additions as ATen's AVX-512 Vectorized<float>.
struct V16Pair {
  struct T {
    __m256 lo, hi;
  };
  static constexpr int L = 16;
  static T zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static T load_abs(const float* p) { return {V8::load_abs(p), V8::load_abs(p + 8)}; }
  static T add(T a, T b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
  static void store(float* d, T v) { _mm256_storeu_ps(d, v.lo), _mm256_storeu_ps(d + 8, v.hi); }
};

// The sign words of a chunk (n = channels * K floats at src, in memory order: bit i of the string is
// float i), K words, zero past n. KC > 0: n == 64 KC, known at compile time (the masks fold away).
template <int64_t KC>
inline void chunk_sign_words_avx2(const float* src, int64_t n, uint64_t* words, int64_t K) {
  const int64_t nw = KC > 0 ? KC : (n + 63) / 64;
  for (int64_t j = 0; j < nw; ++j) {
    uint64_t word = 0;
    for (int q = 0; q < 8; ++q) {
      const int64_t i = j * 64 + q * 8;
      if (KC > 0 || i + 8 <= n) {
        word |= uint64_t(nonneg_mask8(_mm256_loadu_ps(src + i))) << (8 * q);
      } else if (i < n) {
        const int64_t left = n - i;  // masked-off lanes load 0, which reads as +1: cleared
        word |= uint64_t(nonneg_mask8(load_tail_ps(src + i, left)) & ((1u << left) - 1u)) << (8 * q);
      }
    }
    words[j] = word;
  }
  for (int64_t j = nw; j < K; ++j) words[j] = 0;
}

template <int64_t KC>
void pack_weight_avx2_impl(const float* w, int64_t Cin, int64_t Krt, uint64_t* dst, float* abs_sum, int sum_lanes,
                           int64_t co_begin, int64_t co_end, int32_t* tap_pop, const PextTaps& taps) {
  const int64_t K = KC > 0 ? KC : Krt;
  const int64_t CW = xnor_words(Cin), n = Cin * K;
  uint64_t words[kPackWeightMaxTaps];
  for (int64_t co = co_begin; co < co_end; ++co) {
    if (tap_pop)
      for (int64_t k = 0; k < K; ++k) tap_pop[co * K + k] = 0;
    for (int64_t cw = 0; cw < CW; ++cw) {
      const int64_t nc = Cin - cw * 64 < 64 ? Cin - cw * 64 : 64;
      const float* src = w + co * n + cw * 64 * K;
      if (KC > 0 && nc == 64)
        chunk_sign_words_avx2<KC>(src, 64 * K, words, K);
      else
        chunk_sign_words_avx2<0>(src, nc * K, words, K);
      uint64_t* d = dst + co * K * CW + cw;
      taps(words, d, CW);
      if (tap_pop)
        for (int64_t k = 0; k < K; ++k) tap_pop[co * K + k] += static_cast<int32_t>(__builtin_popcountll(d[k * CW]));
    }
    // The row (n floats) was just read: its second pass, in ATen's order, runs from L1 / L2.
    if (abs_sum)
      abs_sum[co] = sum_lanes == 16 ? aten_order_abs_sum<V16Pair>(w + co * n, n) : aten_order_abs_sum<V8>(w + co * n, n);
  }
}

}  // namespace

// As pack_weight_abs_f32_avx512 (the same words, popcounts and sums), with 8-float sign masks and the
// pext tap gather: for CPUs whose pext is fast (pack_weight_abs_f32_available checks).
void pack_weight_abs_f32_avx2(const float* w, int64_t Cin, int64_t K, uint64_t* dst, float* abs_sum, int sum_lanes,
                              int64_t co_begin, int64_t co_end, int32_t* tap_pop) {
  with_pext_taps(K, [&](auto kc, const PextTaps& taps) {
    pack_weight_avx2_impl<decltype(kc)::value>(w, Cin, K, dst, abs_sum, sum_lanes, co_begin, co_end, tap_pop, taps);
  });
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
