// Body of the AVX-512 popcount GEMM (included inside an anonymous namespace under an AVX-512 target
// region by xnor_conv_avx512.cpp, and by tools/avx512_emulation against SIMDe). Uses only
// loadu/set1/xor/popcnt/add/maskz_cvtepi64_epi32 on 512-bit epi64 vectors (the maskz form: GCC 12 warns
// about the undefined pass-through of the plain one).
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
  for (int k = 0; k < nk; ++k) {
    const uint64_t* xp = x + xoff[k];
    const uint64_t* wp = w + woff[k];
    __m512i xv[PB];
    for (int q = 0; q < PB; ++q) xv[q] = _mm512_loadu_si512(xp + 8 * q);
    for (int o = 0; o < OB; ++o) {
      const __m512i wv = _mm512_set1_epi64(static_cast<long long>(wp[o * wstride]));
      for (int q = 0; q < PB; ++q)
        acc[o][q] = _mm512_add_epi64(acc[o][q], _mm512_popcnt_epi64(_mm512_xor_si512(xv[q], wv)));
    }
  }
  for (int o = 0; o < OB; ++o)
    for (int q = 0; q < PB; ++q)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(S + o * ss + 8 * q), _mm512_maskz_cvtepi64_epi32(static_cast<__mmask8>(0xff), acc[o][q]));
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
