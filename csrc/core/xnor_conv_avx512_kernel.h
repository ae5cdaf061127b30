// Bodies of the AVX-512 popcount GEMM and float32 bit packing (included inside an anonymous namespace
// under an AVX-512 target region by xnor_conv_avx512.cpp, and by tools/avx512_emulation against SIMDe).
// maskz forms where a plain one exists: GCC 12 warns about their undefined pass-through operand.
//
// Lanes are output pixels (8 per vector, the prepared-input layout of xnor_conv.h), so every load is a
// full vector at any channel count. A register block is OB output channels x PB vectors of 8 pixels:
// per K step PB vector loads and OB broadcasts feed OB * PB xor + vpopcntq + add, with the 64-bit lane
// sums staying in registers for the whole K loop (no horizontal reduction at the end).

#ifndef FASTPOSE_XNOR512_OB
#define FASTPOSE_XNOR512_OB 4
#endif
#ifndef FASTPOSE_XNOR512_PB
#define FASTPOSE_XNOR512_PB 4
#endif

template <int OB, int PB>
void xnor512_gemm(const uint64_t* x, const int64_t* xoff, int nk, const uint64_t* w, int64_t wstride,
                  const int64_t* woff, int32_t* S, int64_t ss) {
  __m512i acc[OB][PB];
  for (int o = 0; o < OB; ++o)
    for (int q = 0; q < PB; ++q) acc[o][q] = _mm512_setzero_si512();
  // nk >= 1 (xnor_gemm_block handles 0): a do-while, or GCC keeps a zeroed copy of acc on the stack
  // for the zero-trip case and writes it on every call.
  int k = 0;
  do {
    const uint64_t* xp = x + xoff[k];
    const uint64_t* wp = w + woff[k];
    __m512i xv[PB];
    for (int q = 0; q < PB; ++q) xv[q] = _mm512_loadu_si512(xp + 8 * q);
    for (int o = 0; o < OB; ++o) {
      const __m512i wv = _mm512_set1_epi64(static_cast<long long>(wp[o * wstride]));
      for (int q = 0; q < PB; ++q)
        acc[o][q] = _mm512_add_epi64(acc[o][q], _mm512_popcnt_epi64(_mm512_xor_si512(xv[q], wv)));
    }
  } while (++k < nk);
  // Pairs of pixel vectors as one 512-bit store: the epilogue reads S back at once in 16-pixel vectors, and
  // a load that spans two stores still in the store buffer cannot be forwarded (it waits for both).
  for (int o = 0; o < OB; ++o) {
    int q = 0;
    for (; q + 2 <= PB; q += 2) {
      const __m256i lo = _mm512_cvtepi64_epi32(acc[o][q]), hi = _mm512_cvtepi64_epi32(acc[o][q + 1]);
      _mm512_storeu_si512(S + o * ss + 8 * q, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
    }
    if (q < PB) _mm256_storeu_si256(reinterpret_cast<__m256i*>(S + o * ss + 8 * q), _mm512_cvtepi64_epi32(acc[o][q]));
  }
}

typedef void (*Xnor512Fn)(const uint64_t*, const int64_t*, int, const uint64_t*, int64_t, const int64_t*, int32_t*,
                          int64_t);

template <int OB, int PB>
struct Xnor512Table {
  // fn[ob - 1][pb - 1] = xnor512_gemm<ob, pb>
  Xnor512Fn fn[OB][PB];
  template <int O, int P>
  void fill() {
    fn[O - 1][P - 1] = &xnor512_gemm<O, P>;
    if constexpr (P > 1) fill<O, P - 1>();
    if constexpr (P == 1 && O > 1) fill<O - 1, PB>();
  }
  Xnor512Table() { fill<OB, PB>(); }
};

inline void xnor512_run(const uint64_t* x, const int64_t* xoff, int nk, const uint64_t* w, int64_t wstride,
                        const int64_t* woff, int nout, int npix, int32_t* S, int64_t ss) {
  constexpr int OB = FASTPOSE_XNOR512_OB, PB = FASTPOSE_XNOR512_PB;
  static const Xnor512Table<OB, PB> table;
  // Pixel blocks outside, channel blocks inside: a pixel block's K x PB vectors stay in L1 while every
  // filter of the unit passes over them.
  for (int q = 0; q < npix; q += 8 * PB) {
    const int pb = std::min(PB, (npix - q) / 8);
    int o = 0;
    for (; o + OB <= nout; o += OB) table.fn[OB - 1][pb - 1](x + q, xoff, nk, w + o * wstride, wstride, woff, S + o * ss + q, ss);
    if (o < nout) table.fn[nout - o - 1][pb - 1](x + q, xoff, nk, w + o * wstride, wstride, woff, S + o * ss + q, ss);
  }
}

// 16 pixels x 64 channels per tile: one compare per channel gives that channel's 16 pixel bits; the
// 64 masks (uint16) are narrowed to bytes (pixels 0-7, then 8-15), and vptestmb against bit p of
// every byte gathers pixel p's 64 channel bits into one mask register: the packed word. Channels go
// through their whole row four at a time (four contiguous streams; tile by tile, the 64 channel streams
// 4 KB+ apart defeat the prefetchers: 4x slower).
inline void xnor512_pack_row_nchw(const float* src, int64_t C, int64_t W, int64_t sc, uint64_t* dst, int64_t ps,
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
      // Four channels at a time: four sequential streams in flight. One channel after the other, each
      // 4 KB run (one page) restarts the prefetcher: from DRAM, 0.50 ms against 0.30 for (256, 64, 64).
      for (int64_t c = 0; c < nc; c += 4) {
        const int ng = nc - c < 4 ? static_cast<int>(nc - c) : 4;
        const float* s = src + (c0 + c) * sc + wb;
        for (int64_t t = 0; t + 1 < tiles; ++t)
          for (int i = 0; i < ng; ++i)
            M[t][c + i] = static_cast<uint16_t>(
                _mm512_cmp_ps_mask(_mm512_loadu_ps(s + i * sc + 16 * t), zero, _CMP_GE_OQ));
        const int64_t t = tiles - 1;
        for (int i = 0; i < ng; ++i)
          M[t][c + i] = static_cast<uint16_t>(
              _mm512_mask_cmp_ps_mask(tm, _mm512_maskz_loadu_ps(tm, s + i * sc + 16 * t), zero, _CMP_GE_OQ));
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

inline void xnor512_pack_row_nhwc(const float* src, int64_t C, int64_t W, int64_t sw, uint64_t* dst, int64_t ps,
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
