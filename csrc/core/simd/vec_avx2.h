// 8 x float on AVX2 + FMA + F16C. Included inside `#pragma GCC target("avx2,fma,f16c")` and an
// anonymous namespace by the kernel files; includes nothing itself (<immintrin.h> comes first).
struct VecAvx2 {
  using T = float;
  static constexpr int N = 8;
  __m256 v;

  static inline __m256i tail_mask(int n) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota);
  }
  static inline VecAvx2 set1(float x) { return {_mm256_set1_ps(x)}; }
  static inline VecAvx2 load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static inline VecAvx2 load_partial(const float* p, int n, float fill) {
    const __m256i m = tail_mask(n);
    return {_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m))};
  }
  static inline void store(float* p, VecAvx2 a) { _mm256_storeu_ps(p, a.v); }
  static inline void store_partial(float* p, int n, VecAvx2 a) { _mm256_maskstore_ps(p, tail_mask(n), a.v); }
  // Non-temporal store (p 32-byte aligned): no read-for-ownership of the line.
  static constexpr int kStreamAlign = 32;
  static inline void stream(float* p, VecAvx2 a) { _mm256_stream_ps(p, a.v); }
  static inline void stream_fence() { _mm_sfence(); }
  inline VecAvx2 operator+(VecAvx2 b) const { const VecAvx2& a = *this; return {_mm256_add_ps(a.v, b.v)}; }
  inline VecAvx2 operator-(VecAvx2 b) const { const VecAvx2& a = *this; return {_mm256_sub_ps(a.v, b.v)}; }
  inline VecAvx2 operator*(VecAvx2 b) const { const VecAvx2& a = *this; return {_mm256_mul_ps(a.v, b.v)}; }
  inline VecAvx2 operator/(VecAvx2 b) const { const VecAvx2& a = *this; return {_mm256_div_ps(a.v, b.v)}; }
  static inline VecAvx2 fma(VecAvx2 a, VecAvx2 b, VecAvx2 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  static inline VecAvx2 max(VecAvx2 a, VecAvx2 b) { return {_mm256_max_ps(a.v, b.v)}; }
  static inline float hsum(VecAvx2 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static inline float hmax(VecAvx2 a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  // exp(x) for x <= 0 (callers subtract the running max): Cody-Waite reduction and a degree-6
  // polynomial, about 1 ulp. x < -87 (masked logits are -inf) gives exactly 0; NaN stays NaN.
  static inline VecAvx2 exp_nonpos(VecAvx2 a) {
    const __m256 keep = _mm256_cmp_ps(a.v, _mm256_set1_ps(-87.0f), _CMP_NLT_UQ);
    __m256 x = _mm256_max_ps(_mm256_set1_ps(-87.0f), a.v);  // this operand order keeps NaN
    const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return {_mm256_and_ps(y, keep)};
  }

  // exp(x) for x <= 0 in the hot loops, where results below 2^-125 need not be exact (they weigh
  // ~1e-38 against the maximum's 1): one-constant range reduction r = x - n ln2, a degree-5
  // minimax polynomial for e^r on [-ln2/2, ln2/2] (fitted for this kernel; max relative error
  // 4e-7 over [-80, 0], 1e-7 near 0), and 2^n added straight into the exponent bits, n read off
  // the 1.5 * 2^23 rounding shift. 8 FMA-class ops instead of 12; NaN still propagates.
  static inline VecAvx2 exp_nonpos_fast(VecAvx2 a) {
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    const __m256 x0 = _mm256_max_ps(_mm256_set1_ps(-87.0f), a.v);
    const __m256 t = _mm256_fmadd_ps(x0, _mm256_set1_ps(1.44269504088896341f), magic);
    const __m256 fx = _mm256_sub_ps(t, magic);
    const __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693147180559945f), x0);
    __m256 p = _mm256_set1_ps(0.008297654800117016f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.04191538318991661f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.16667574644088745f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.49998894333839417f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.9999997019767761f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0000001192092896f));
    return {_mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(_mm256_castps_si256(t), 23)))};
  }


  // Block exp of the hot loops: e = exp(l - ref) for U vectors of logits l. The reference is
  // rounded down to a multiple of ln2/8, ref = mi ln2/8, and mi is folded into the rounding shift, so
  // that t = l * 8/ln2 + (1.5 * 2^23 - mi) holds k = round(8 (l - ref) / ln2) in its low bits with
  // no subtraction: r = l - (t - shift) ln2/8 in [-ln2/16, ln2/16], e = 2^(k/8) e^r, 2^(k/8) from
  // an 8-entry table indexed by k's low bits (one vpermps) with k >> 3 added into the exponent
  // bits, e^r a degree-3 polynomial. Callers fold exp(ref - their reference) into their scalars.
  // Logits below ref - 87 are clamped there (masked -inf entries give ~1e-38, as exp_nonpos_fast);
  // the reduction's error grows with |l| (2.8e-9 |l| relative, a uniform tilt that the softmax's
  // normalisation mostly cancels). Max relative error 3e-7 over [-87, 0] at |l| < 30.
  static constexpr int kUnroll = 2;
  struct ExpBlock {
    double ref;  // the reference actually subtracted: mi * ln2 / 8 (or the given one, see table)
    bool table;  // false for |reference| >= 65536 or non-finite: plain exp_nonpos_fast(l - ref)
    __m256 lo, scale, shift, c2, c3, one, ln2k, mref;
    __m256i tab;
    explicit ExpBlock(double m) {
      table = m > -65536.0 && m < 65536.0;
      double mi = 0.0;
      if (table) {
        mi = __builtin_floor(m * (8.0 / 0.69314718055994530942));  // ref <= m: never above the max
        ref = mi * (0.69314718055994530942 / 8.0);
      } else {
        ref = static_cast<double>(static_cast<float>(m));
      }
      lo = _mm256_set1_ps(static_cast<float>(ref - 87.0));
      scale = _mm256_set1_ps(8.0f * 1.44269504088896341f);
      shift = _mm256_set1_ps(static_cast<float>(12582912.0 - mi));
      ln2k = _mm256_set1_ps(0.693147180559945f / 8.0f);
      c2 = _mm256_set1_ps(0.5000782012939453f);
      c3 = _mm256_set1_ps(0.16665102541446686f);
      one = _mm256_set1_ps(1.0f);
      mref = _mm256_set1_ps(static_cast<float>(ref));
      // 2^(j/8) with j << 20 taken off: adding t << 20 (= n << 23 + j << 20) then gives 2^(n + j/8)
      tab = _mm256_setr_epi32(0x3f800000, 0x3f7b95c2, 0x3f7837f0, 0x3f75fed7, 0x3f7504f3, 0x3f75672a, 0x3f7744fd,
                              0x3f7ac0c7);
    }
    template <int U>
    __attribute__((always_inline)) inline void run(VecAvx2* a) const {
      if (!table) {
        for (int k = 0; k < U; ++k) a[k] = exp_nonpos_fast(a[k] - VecAvx2{mref});
        return;
      }
      __m256 x[U], t[U], r[U], q[U];
      __m256i b[U];
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) x[k] = _mm256_max_ps(lo, a[k].v);  // this operand order keeps NaN
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) t[k] = _mm256_fmadd_ps(x[k], scale, shift);
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) r[k] = _mm256_fnmadd_ps(_mm256_sub_ps(t[k], shift), ln2k, x[k]);
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) q[k] = _mm256_fmadd_ps(c3, r[k], c2);
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) b[k] = _mm256_permutevar8x32_epi32(tab, _mm256_castps_si256(t[k]));
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) q[k] = _mm256_fmadd_ps(q[k], r[k], one);
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) q[k] = _mm256_fmadd_ps(q[k], r[k], one);
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) b[k] = _mm256_add_epi32(b[k], _mm256_slli_epi32(_mm256_castps_si256(t[k]), 20));
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) a[k].v = _mm256_mul_ps(q[k], _mm256_castsi256_ps(b[k]));
    }
  };


  // Natural log for positive normal x (callers add a 1e-24 epsilon), about 1 ulp.
  static inline VecAvx2 log(VecAvx2 a) {
    const __m256i xi = _mm256_castps_si256(a.v);
    __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(xi, 23), _mm256_set1_epi32(126)));
    __m256 m = _mm256_castsi256_ps(
        _mm256_or_si256(_mm256_and_si256(xi, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f000000)));
    const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
    e = _mm256_sub_ps(e, _mm256_and_ps(_mm256_set1_ps(1.0f), small));
    m = _mm256_add_ps(_mm256_sub_ps(m, _mm256_set1_ps(1.0f)), _mm256_and_ps(m, small));
    const __m256 z = _mm256_mul_ps(m, m);
    __m256 y = _mm256_set1_ps(7.0376836292e-2f);
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.1514610310e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.1676998740e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.2420140846e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.4249322787e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.6668057665e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(2.0000714765e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-2.4999993993e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(3.3333331174e-1f));
    y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
    y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
    y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
    __m256 r = _mm256_add_ps(m, y);
    r = _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), r);
    return {r};
  }

  // float16 / bfloat16 rows: n full lanes from p.
  static inline VecAvx2 load_half(const uint16_t* p) {
    return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
  }
  static inline VecAvx2 load_bf16(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(w, 16))};
  }
  static inline void store_half(uint16_t* p, VecAvx2 a) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT));
  }
};
