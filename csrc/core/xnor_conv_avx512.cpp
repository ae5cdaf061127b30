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

void xnor_gemm_block_avx512(const uint64_t* x, const int64_t* xoff, int nk, const uint64_t* w, int64_t wstride,
                            const int64_t* woff, int nout, int npix, int32_t* S, int64_t s_ostride) {
  xnor512_run(x, xoff, nk, w, wstride, woff, nout, npix, S, s_ostride);
}

// 16 pixels x 64 channels per tile: one compare per channel gives that channel's 16 pixel bits; the
// 64 masks (uint16) are narrowed to bytes (pixels 0-7, then 8-15), and vptestmb against bit p of
// every byte gathers pixel p's 64 channel bits into one mask register: the packed word. Each
// channel's whole row is compared before the next channel (one contiguous stream per channel; tile
// by tile, the 64 channel streams 4 KB+ apart defeat the prefetchers: 4x slower).
void pack_row_nchw_f32_avx512(const float* src, int64_t C, int64_t W, int64_t sc, uint64_t* dst, int64_t ps,
                              int64_t ks) {
  constexpr int64_t kMaxTiles = 64;  // pixels per pass: 1024
  alignas(64) uint16_t M[kMaxTiles][64];
  const __m512 zero = _mm512_setzero_ps();
  const int64_t CW = xnor_words(C);
  for (int64_t wb = 0; wb < W; wb += 16 * kMaxTiles) {
    const int64_t wn = W - wb < 16 * kMaxTiles ? W - wb : 16 * kMaxTiles;
    const int64_t tiles = (wn + 15) / 16;
    const int64_t tail = wn - 16 * (tiles - 1);
    const __mmask16 tm = static_cast<__mmask16>(tail == 16 ? 0xffffu : (1u << tail) - 1u);
    for (int64_t k = 0; k < CW; ++k) {
      const int64_t c0 = 64 * k;
      const int64_t nc = C - c0 < 64 ? C - c0 : 64;
      for (int64_t c = 0; c < nc; ++c) {
        const float* s = src + (c0 + c) * sc + wb;
        for (int64_t t = 0; t + 1 < tiles; ++t)
          M[t][c] = static_cast<uint16_t>(_mm512_cmp_ps_mask(_mm512_loadu_ps(s + 16 * t), zero, _CMP_GE_OQ));
        const int64_t t = tiles - 1;
        M[t][c] = static_cast<uint16_t>(
            _mm512_mask_cmp_ps_mask(tm, _mm512_maskz_loadu_ps(tm, s + 16 * t), zero, _CMP_GE_OQ));
      }
      for (int64_t t = 0; t < tiles; ++t) {
        for (int64_t c = nc; c < 64; ++c) M[t][c] = 0;
        // Narrowed through memory (GCC 12 warns about the undefined upper half of the register forms).
        const __m512i m0 = _mm512_load_si512(M[t]), m1 = _mm512_load_si512(M[t] + 32);
        const __mmask32 all = 0xffffffffu;
        alignas(64) uint8_t B[2][64];
        _mm256_store_si256(reinterpret_cast<__m256i*>(B[0]), _mm512_maskz_cvtepi16_epi8(all, m0));
        _mm256_store_si256(reinterpret_cast<__m256i*>(B[0] + 32), _mm512_maskz_cvtepi16_epi8(all, m1));
        _mm256_store_si256(reinterpret_cast<__m256i*>(B[1]), _mm512_maskz_cvtepi16_epi8(all, _mm512_srli_epi16(m0, 8)));
        _mm256_store_si256(reinterpret_cast<__m256i*>(B[1] + 32),
                           _mm512_maskz_cvtepi16_epi8(all, _mm512_srli_epi16(m1, 8)));
        const __m512i lo = _mm512_load_si512(B[0]), hi = _mm512_load_si512(B[1]);
        const int64_t nw = t + 1 < tiles ? 16 : tail;
        uint64_t* d = dst + (wb + 16 * t) * ps + k * ks;
        const int64_t n_lo = nw < 8 ? nw : 8;
        for (int64_t q = 0; q < n_lo; ++q)
          d[q * ps] = _cvtmask64_u64(_mm512_test_epi8_mask(lo, _mm512_set1_epi8(static_cast<char>(1 << q))));
        for (int64_t q = 8; q < nw; ++q)
          d[q * ps] = _cvtmask64_u64(_mm512_test_epi8_mask(hi, _mm512_set1_epi8(static_cast<char>(1 << (q - 8)))));
      }
    }
  }
}

void pack_row_nhwc_f32_avx512(const float* src, int64_t C, int64_t W, int64_t sw, uint64_t* dst, int64_t ps,
                              int64_t ks) {
  const __m512 zero = _mm512_setzero_ps();
  const int64_t CW = xnor_words(C);
  for (int64_t w = 0; w < W; ++w) {
    const float* s = src + w * sw;
    for (int64_t k = 0; k < CW; ++k) {
      uint64_t word = 0;
      for (int64_t g = 0; g < 4; ++g) {
        const int64_t c = 64 * k + 16 * g;
        if (c >= C) break;
        const int64_t m = C - c < 16 ? C - c : 16;
        const __mmask16 lm = static_cast<__mmask16>(m == 16 ? 0xffffu : (1u << m) - 1u);
        const __mmask16 b = _mm512_mask_cmp_ps_mask(lm, _mm512_maskz_loadu_ps(lm, s + c), zero, _CMP_GE_OQ);
        word |= static_cast<uint64_t>(b) << (16 * g);
      }
      dst[w * ps + k * ks] = word;
    }
  }
}

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

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#endif
