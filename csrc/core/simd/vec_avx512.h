// 16 x float on AVX-512 (F, BW, VL). Included inside `#pragma GCC target(...)` and an anonymous
// namespace by the kernel files; includes nothing itself. Same interface as VecAvx2.
struct VecAvx512 {
  using T = float;
  static constexpr int N = 16;
  __m512 v;

  static inline __mmask16 tail_mask(int n) {
    return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n > 0 ? n : 0)) - 1u);
  }
  static inline VecAvx512 set1(float x) { return {_mm512_set1_ps(x)}; }
  static inline VecAvx512 load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static inline VecAvx512 load_partial(const float* p, int n, float fill) {
    return {_mm512_mask_loadu_ps(_mm512_set1_ps(fill), tail_mask(n), p)};
  }
  static inline void store(float* p, VecAvx512 a) { _mm512_storeu_ps(p, a.v); }
  static inline void store_partial(float* p, int n, VecAvx512 a) { _mm512_mask_storeu_ps(p, tail_mask(n), a.v); }
  // Non-temporal store of a whole cache line (p 64-byte aligned): no read-for-ownership of the line.
  static constexpr int kStreamAlign = 64;
  static inline void stream(float* p, VecAvx512 a) { _mm512_stream_ps(p, a.v); }
  static inline void stream_fence() { _mm_sfence(); }
  inline VecAvx512 operator+(VecAvx512 b) const { const VecAvx512& a = *this; return {_mm512_add_ps(a.v, b.v)}; }
  inline VecAvx512 operator-(VecAvx512 b) const { const VecAvx512& a = *this; return {_mm512_sub_ps(a.v, b.v)}; }
  inline VecAvx512 operator*(VecAvx512 b) const { const VecAvx512& a = *this; return {_mm512_mul_ps(a.v, b.v)}; }
  inline VecAvx512 operator/(VecAvx512 b) const { const VecAvx512& a = *this; return {_mm512_div_ps(a.v, b.v)}; }
  static inline VecAvx512 fma(VecAvx512 a, VecAvx512 b, VecAvx512 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
  static inline VecAvx512 max(VecAvx512 a, VecAvx512 b) { return {_mm512_max_ps(a.v, b.v)}; }
  static inline float hsum(VecAvx512 a) { return _mm512_reduce_add_ps(a.v); }
  static inline float hmax(VecAvx512 a) { return _mm512_reduce_max_ps(a.v); }

  // See VecAvx2::exp_nonpos.
  static inline VecAvx512 exp_nonpos(VecAvx512 a) {
    const __mmask16 keep = _mm512_cmp_ps_mask(a.v, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ);
    __m512 x = _mm512_max_ps(_mm512_set1_ps(-87.0f), a.v);
    const __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
    return {_mm512_maskz_mov_ps(keep, y)};
  }

  // exp(x) for x <= 0 in the hot loops, where results below 2^-125 need not be exact (they weigh
  // ~1e-38 against the maximum's 1): one-constant range reduction r = x - n ln2, a degree-5
  // minimax polynomial for e^r on [-ln2/2, ln2/2] (fitted for this kernel; max relative error
  // 4e-7 over [-80, 0], 1e-7 near 0), and 2^n added straight into the exponent bits, n read off
  // the 1.5 * 2^23 rounding shift. 8 FMA-class ops instead of 12; NaN still propagates.
  static inline VecAvx512 exp_nonpos_fast(VecAvx512 a) {
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512 x0 = _mm512_max_ps(_mm512_set1_ps(-87.0f), a.v);
    const __m512 t = _mm512_fmadd_ps(x0, _mm512_set1_ps(1.44269504088896341f), magic);
    const __m512 fx = _mm512_sub_ps(t, magic);
    const __m512 r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693147180559945f), x0);
    __m512 p = _mm512_set1_ps(0.008297654800117016f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.04191538318991661f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.16667574644088745f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.49998894333839417f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.9999997019767761f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0000001192092896f));
    return {_mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), _mm512_slli_epi32(_mm512_castps_si512(t), 23)))};
  }


  // Block exp of the hot loops: e = exp(l - ref) for U vectors of logits l (see VecAvx2::ExpBlock
  // for the scheme). Here the table has 32 entries (two registers, one vpermt2d) and the
  // polynomial degree 2: 10 ops per vector instead of 12 (the subtraction, 5 polynomial FMAs)
  // and a third of the dependency chain. Max relative error 4.5e-7 over [-87, 0], 1.5e-7 near 0.
  static constexpr int kUnroll = 4;
  struct ExpBlock {
    double ref;  // the reference actually subtracted: mi * ln2 / 32 (or the given one, see table)
    bool table;  // false for |reference| >= 65536 or non-finite: plain exp_nonpos_fast(l - ref)
    __m512 lo, scale, shift, c1, c2, one, ln2k, mref;
    __m512i t0, t1;
    explicit ExpBlock(double m) {
      table = m > -65536.0 && m < 65536.0;
      double mi = 0.0;
      if (table) {
        mi = __builtin_floor(m * (32.0 / 0.69314718055994530942));  // ref <= m: never above the max
        ref = mi * (0.69314718055994530942 / 32.0);
      } else {
        ref = static_cast<double>(static_cast<float>(m));
      }
      lo = _mm512_set1_ps(static_cast<float>(ref - 87.0));
      scale = _mm512_set1_ps(32.0f * 1.44269504088896341f);
      shift = _mm512_set1_ps(static_cast<float>(12582912.0 - mi));
      ln2k = _mm512_set1_ps(0.693147180559945f / 32.0f);
      c1 = _mm512_set1_ps(1.0000146627426147f);
      c2 = _mm512_set1_ps(0.4999963343143463f);
      one = _mm512_set1_ps(1.0f);
      mref = _mm512_set1_ps(static_cast<float>(ref));
      // 2^(j/32) with j << 18 taken off: adding t << 18 (= n << 23 + j << 18) then gives 2^(n + j/32)
      t0 = _mm512_setr_epi32(0x3f800000, 0x3f7ecd87, 0x3f7daac3, 0x3f7c980f, 0x3f7b95c2, 0x3f7aa43a, 0x3f79c3d3,
                             0x3f78f4f0, 0x3f7837f0, 0x3f778d3a, 0x3f76f532, 0x3f767043, 0x3f75fed7, 0x3f75a15b,
                             0x3f75583f, 0x3f7523f6);
      t1 = _mm512_setr_epi32(0x3f7504f3, 0x3f74fbaf, 0x3f7508a4, 0x3f752c4d, 0x3f75672a, 0x3f75b9be, 0x3f76248c,
                             0x3f76a81e, 0x3f7744fd, 0x3f77fbb8, 0x3f78ccdf, 0x3f79b907, 0x3f7ac0c7, 0x3f7be4ba,
                             0x3f7d257d, 0x3f7e83b3);
    }
    template <int U>
    __attribute__((always_inline)) inline void run(VecAvx512* a) const {
      if (!table) {
        for (int k = 0; k < U; ++k) a[k] = exp_nonpos_fast(a[k] - VecAvx512{mref});
        return;
      }
      // Each step over all U vectors before the next: the scheduler sees independent work.
      __m512 x[U], t[U], r[U], q[U];
      __m512i b[U];
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) x[k] = _mm512_max_ps(lo, a[k].v);  // this operand order keeps NaN
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) t[k] = _mm512_fmadd_ps(x[k], scale, shift);
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) r[k] = _mm512_fnmadd_ps(_mm512_sub_ps(t[k], shift), ln2k, x[k]);
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) q[k] = _mm512_fmadd_ps(c2, r[k], c1);
      // The shift first: t then dies in the permute, which can overwrite it (vpermi2d) instead of
      // a copy of the table (vpermt2d destroys its first table operand).
      __m512i sh[U];
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) sh[k] = _mm512_slli_epi32(_mm512_castps_si512(t[k]), 18);
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) b[k] = _mm512_permutex2var_epi32(t0, _mm512_castps_si512(t[k]), t1);
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) q[k] = _mm512_fmadd_ps(q[k], r[k], one);
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) b[k] = _mm512_add_epi32(b[k], sh[k]);
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) a[k].v = _mm512_mul_ps(q[k], _mm512_castsi512_ps(b[k]));
    }
  };

  // See VecAvx2::log.
  static inline VecAvx512 log(VecAvx512 a) {
    const __m512i xi = _mm512_castps_si512(a.v);
    __m512 e = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(xi, 23), _mm512_set1_epi32(126)));
    __m512 m = _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_and_si512(xi, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x3f000000)));
    const __mmask16 small = _mm512_cmp_ps_mask(m, _mm512_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
    e = _mm512_mask_sub_ps(e, small, e, _mm512_set1_ps(1.0f));
    m = _mm512_mask_add_ps(_mm512_sub_ps(m, _mm512_set1_ps(1.0f)), small, _mm512_sub_ps(m, _mm512_set1_ps(1.0f)), m);
    const __m512 z = _mm512_mul_ps(m, m);
    __m512 y = _mm512_set1_ps(7.0376836292e-2f);
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(-1.1514610310e-1f));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(1.1676998740e-1f));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(-1.2420140846e-1f));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(1.4249322787e-1f));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(-1.6668057665e-1f));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(2.0000714765e-1f));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(-2.4999993993e-1f));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(3.3333331174e-1f));
    y = _mm512_mul_ps(_mm512_mul_ps(y, m), z);
    y = _mm512_fmadd_ps(e, _mm512_set1_ps(-2.12194440e-4f), y);
    y = _mm512_fnmadd_ps(z, _mm512_set1_ps(0.5f), y);
    __m512 r = _mm512_add_ps(m, y);
    r = _mm512_fmadd_ps(e, _mm512_set1_ps(0.693359375f), r);
    return {r};
  }

  static inline VecAvx512 load_half(const uint16_t* p) {
    return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
  }
  static inline VecAvx512 load_bf16(const uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(w, 16))};
  }
  static inline void store_half(uint16_t* p, VecAvx512 a) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT));
  }
};
