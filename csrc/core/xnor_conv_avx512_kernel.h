// Body of the AVX-512 popcount block (included inside an anonymous namespace under an AVX-512 target
// region by xnor_conv_avx512.cpp, and by tools/avx512_emulation against SIMDe to check it on machines
// without AVX-512). Uses only loadu/maskz_loadu/storeu/xor/popcnt/add on 512-bit epi64 vectors.

inline int64_t xnor512_hsum(__m512i v) {
  // Through memory: once per block, and GCC's 512-bit extract intrinsics warn under -Wall.
  int64_t t[8];
  _mm512_storeu_si512(t, v);
  return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

template <int OB, int PB>
void xnor512_block(const uint64_t* x, int64_t xstride, const uint64_t* w, int64_t wstride, const int64_t* xoff,
                   const int64_t* woff, int nseg, int64_t L, int32_t* dots, int64_t dstride) {
  __m512i acc[OB][PB];
  for (int o = 0; o < OB; ++o)
    for (int q = 0; q < PB; ++q) acc[o][q] = _mm512_setzero_si512();
  const int64_t nfull = L >> 3, tail = L & 7;
  const __mmask8 tm = static_cast<__mmask8>((1u << tail) - 1u);
  for (int g = 0; g < nseg; ++g) {
    const uint64_t* xs = x + xoff[g];
    const uint64_t* ws = w + woff[g];
    for (int64_t c = 0; c < nfull; ++c) {
      __m512i xv[PB];
      for (int q = 0; q < PB; ++q) xv[q] = _mm512_loadu_si512(xs + q * xstride + 8 * c);
      for (int o = 0; o < OB; ++o) {
        const __m512i wv = _mm512_loadu_si512(ws + o * wstride + 8 * c);
        for (int q = 0; q < PB; ++q)
          acc[o][q] = _mm512_add_epi64(acc[o][q], _mm512_popcnt_epi64(_mm512_xor_si512(xv[q], wv)));
      }
    }
    if (tail) {
      __m512i xv[PB];
      for (int q = 0; q < PB; ++q) xv[q] = _mm512_maskz_loadu_epi64(tm, xs + q * xstride + 8 * nfull);
      for (int o = 0; o < OB; ++o) {
        const __m512i wv = _mm512_maskz_loadu_epi64(tm, ws + o * wstride + 8 * nfull);
        for (int q = 0; q < PB; ++q)
          acc[o][q] = _mm512_add_epi64(acc[o][q], _mm512_popcnt_epi64(_mm512_xor_si512(xv[q], wv)));
      }
    }
  }
  for (int o = 0; o < OB; ++o)
    for (int q = 0; q < PB; ++q) dots[o * dstride + q] = static_cast<int32_t>(xnor512_hsum(acc[o][q]));
}

typedef void (*Xnor512Fn)(const uint64_t*, int64_t, const uint64_t*, int64_t, const int64_t*, const int64_t*, int,
                          int64_t, int32_t*, int64_t);

inline void xnor512_run(const uint64_t* x, int64_t xstride, int npix, const uint64_t* w, int64_t wstride, int nout,
                        const int64_t* xoff, const int64_t* woff, int nseg, int64_t L, int32_t* dots,
                        int64_t dstride) {
  static const Xnor512Fn prem[4] = {nullptr, &xnor512_block<4, 1>, &xnor512_block<4, 2>, &xnor512_block<4, 3>};
  static const Xnor512Fn orem[4] = {nullptr, &xnor512_block<1, 1>, &xnor512_block<2, 1>, &xnor512_block<3, 1>};
  int o = 0;
  for (; o + 4 <= nout; o += 4) {
    int q = 0;
    for (; q + 4 <= npix; q += 4)
      xnor512_block<4, 4>(x + q * xstride, xstride, w + o * wstride, wstride, xoff, woff, nseg, L,
                          dots + o * dstride + q, dstride);
    if (q < npix)
      prem[npix - q](x + q * xstride, xstride, w + o * wstride, wstride, xoff, woff, nseg, L, dots + o * dstride + q,
                     dstride);
  }
  if (o < nout) {
    const Xnor512Fn f = orem[nout - o];
    for (int q = 0; q < npix; ++q)
      f(x + q * xstride, xstride, w + o * wstride, wstride, xoff, woff, nseg, L, dots + o * dstride + q, dstride);
  }
}
