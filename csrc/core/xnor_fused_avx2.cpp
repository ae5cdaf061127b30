// AVX2 forms of the XNOR epilogue and of the BatchNorm-folded pack (xnor_fused.cpp), float32, for CPUs
// without AVX-512: channels contiguous (NHWC rows, the packed HPM model) or pixels contiguous (NCHW rows),
// called only when cpuid has AVX2. The same arithmetic as the portable code: FMA is not enabled in this
// file, so every multiply and add is its own instruction and rounds once (xnor_conv.h's contract).
#include <immintrin.h>

#include <cstdint>

#include "core/xnor_conv.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,popcnt")
namespace fastpose {
namespace core {
namespace {

// Lanes [0, n) of 8 (n may exceed 8).
inline __m256i lanes8(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n < 8 ? n : 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline int lane_bits(int64_t n) { return n >= 8 ? 0xff : (1 << n) - 1; }

// In-register transpose of an 8x8 int32 tile: r[i] = row i -> r[j] = column j.
inline void transpose8(__m256i r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(_mm256_castsi256_ps(r[i]), _mm256_castsi256_ps(r[i + 1]));
    t[i + 1] = _mm256_unpackhi_ps(_mm256_castsi256_ps(r[i]), _mm256_castsi256_ps(r[i + 1]));
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
  }
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm256_castps_si256(_mm256_permute2f128_ps(u[k], u[4 + k], 0x20));
    r[4 + k] = _mm256_castps_si256(_mm256_permute2f128_ps(u[k], u[4 + k], 0x31));
  }
}

inline void store8(float* d, __m256i m, bool full, bool stream, __m256 v) {
  if (stream && full && (reinterpret_cast<uintptr_t>(d) & 31) == 0)
    _mm256_stream_ps(d, v);
  else if (full)
    _mm256_storeu_ps(d, v);
  else
    _mm256_maskstore_ps(d, m, v);
}

// Pixels contiguous (NCHW-like): each channel is a run of plain vector loads, arithmetic and stores.
bool channel_major(const XnorConvProblem& p, const int64_t os[4], int64_t n, int64_t oh, int64_t o0, int no,
                   int64_t q0, int nq, const int32_t* S, int64_t s_ostride, const int32_t* k0, const int32_t* extra) {
  const int64_t* rs = p.res_strides;
  // (an up_residual, whose pixels repeat in pairs along W, is left to the portable form here)
  if (p.out_packed || os[3] != 1 || (p.residual && rs[3] != 1) || p.up_residual) return false;
  const float* alpha = static_cast<const float*>(p.alpha);
  const float* bias = static_cast<const float*>(p.bias);
  const float* bns = static_cast<const float*>(p.bn_scale);
  const float* bnt = static_cast<const float*>(p.bn_shift);
  const float* res = static_cast<const float*>(p.residual);
  if (!bns && !res && !extra && nq <= 64) {
    // xnor_conv2d's own case (alpha, bias) on short rows (a small layer's 1-8 vectors per channel), as
    // the AVX-512 form: k0 once for all channels, a lane mask only for the last vector.
    __m256i kv[8];
    const int nt = (nq + 7) / 8, nfull = nq / 8;
    const __m256i tail = lanes8(nq - 8 * nfull);
    for (int t = 0; t < nt; ++t) kv[t] = _mm256_maskload_epi32(k0 + 8 * t, lanes8(nq - 8 * t));
    float* const dst0 = static_cast<float*>(p.out) + n * os[0] + oh * os[2] + q0;
    for (int o = 0; o < no; ++o) {
      const int64_t oc = o0 + o;
      float* dst = dst0 + oc * os[1];
      const int32_t* sp = S + o * s_ostride;
      const __m256 va = _mm256_set1_ps(alpha ? alpha[oc] : 1.f), vb = _mm256_set1_ps(bias ? bias[oc] : 0.f);
      for (int t = 0; t < nt; ++t) {
        const bool full = t < nfull;
        const __m256i sv = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sp + 8 * t))
                                : _mm256_maskload_epi32(sp + 8 * t, tail);
        __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(kv[t], _mm256_slli_epi32(sv, 1)));
        if (alpha) v = _mm256_mul_ps(v, va);
        if (bias) v = _mm256_add_ps(v, vb);
        store8(dst + 8 * t, tail, full, p.stream_out, v);
      }
    }
    if (p.stream_out) _mm_sfence();
    return true;
  }
  for (int o = 0; o < no; ++o) {
    const int64_t oc = o0 + o;
    float* dst = static_cast<float*>(p.out) + n * os[0] + oc * os[1] + oh * os[2] + q0;
    const float* r = res ? res + n * rs[0] + oc * rs[1] + oh * rs[2] + q0 : nullptr;
    const int32_t* s = S + o * s_ostride;
    const int32_t* e = extra ? extra + o * s_ostride : nullptr;
    const __m256 va = _mm256_set1_ps(alpha ? alpha[oc] : 0.f), vb = _mm256_set1_ps(bias ? bias[oc] : 0.f);
    const __m256 vs = _mm256_set1_ps(bns ? bns[oc] : 0.f), vt = _mm256_set1_ps(bnt ? bnt[oc] : 0.f);
    for (int q = 0; q < nq; q += 8) {
      const __m256i m = lanes8(nq - q);
      __m256i sv = _mm256_maskload_epi32(s + q, m);
      if (e) sv = _mm256_add_epi32(sv, _mm256_maskload_epi32(e + q, m));
      __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_maskload_epi32(k0 + q, m), _mm256_slli_epi32(sv, 1)));
      if (alpha) v = _mm256_mul_ps(v, va);
      if (bias) v = _mm256_add_ps(v, vb);
      if (bns) {
        v = _mm256_mul_ps(v, vs);
        if (bnt) v = _mm256_add_ps(v, vt);
      }
      if (r) v = _mm256_add_ps(v, _mm256_maskload_ps(r + q, m));
      store8(dst + q, m, nq - q >= 8, p.stream_out, v);
    }
  }
  if (p.stream_out) _mm_sfence();
  return true;
}

}  // namespace

bool xnor_fused_epilogue_avx2(const XnorConvProblem& p, int64_t n, int64_t oh, int64_t o0, int no, int64_t q0, int nq,
                              const int32_t* S, int64_t s_ostride, const int32_t* k0, const int32_t* extra) {
  if (p.out_type != ElemType::F32) return false;
  int64_t os[4];
  out_strides_of(p, os);
  if (os[1] != 1) return channel_major(p, os, n, oh, o0, no, q0, nq, S, s_ostride, k0, extra);
  const int64_t* rs = p.res_strides;
  if (p.residual && rs[1] != 1) return false;
  const int64_t* us = p.up_strides;
  if (p.up_residual && us[1] != 1) return false;
  if (p.out_packed && (o0 % 64 != 0 || (no % 64 != 0 && o0 + no != p.Cout))) return false;
  const float* alpha = static_cast<const float*>(p.alpha);
  const float* bias = static_cast<const float*>(p.bias);
  const float* bns = static_cast<const float*>(p.bn_scale);
  const float* bnt = static_cast<const float*>(p.bn_shift);
  const float* ns = static_cast<const float*>(p.next_scale);
  const float* nt = static_cast<const float*>(p.next_shift);
  const float* res = static_cast<const float*>(p.residual);
  const int64_t CWo = xnor_words(p.Cout);
  const __m256 zero = _mm256_setzero_ps();
  float* const out0 = static_cast<float*>(p.out) + n * os[0] + oh * os[2] + q0 * os[3] + o0;
  const float* const res0 = res ? res + n * rs[0] + oh * rs[2] + q0 * rs[3] + o0 : nullptr;
  const float* const up0 = p.up_residual ? static_cast<const float*>(p.up_residual) + n * us[0] + (oh >> 1) * us[2] + o0
                                         : nullptr;
  uint64_t* const words0 = p.out_packed ? p.out_packed + ((n * p.Ho + oh) * p.Wo + q0) * CWo + (o0 >> 6) : nullptr;
  // Tiles of 8 pixels x 8 channels: contiguous loads of S rows (border popcounts added), transposed in
  // registers, so the channel-contiguous output needs no gathers.
  for (int qt = 0; qt < nq; qt += 8) {
    const int np = nq - qt < 8 ? nq - qt : 8;
    const __m256i pm = lanes8(np);
    const __m256i kv = _mm256_maskload_epi32(k0 + qt, pm);
    uint64_t word[8] = {0};
    for (int j = 0; j < no; j += 8) {
      const int nc = no - j < 8 ? no - j : 8;
      const __m256i m = lanes8(nc);
      __m256i t[8];
      for (int i = 0; i < 8; ++i) {
        if (i >= nc) {
          t[i] = _mm256_setzero_si256();
          continue;
        }
        __m256i sv = _mm256_maskload_epi32(S + (j + i) * s_ostride + qt, pm);
        if (extra) sv = _mm256_add_epi32(sv, _mm256_maskload_epi32(extra + (j + i) * s_ostride + qt, pm));
        t[i] = _mm256_sub_epi32(kv, _mm256_slli_epi32(sv, 1));
      }
      transpose8(t);  // t[pp]: the dots of pixel qt + pp, channels j .. j + 7
      const int64_t oc = o0 + j;
      const __m256 va = alpha ? _mm256_maskload_ps(alpha + oc, m) : zero;
      const __m256 vb = bias ? _mm256_maskload_ps(bias + oc, m) : zero;
      const __m256 vs = bns ? _mm256_maskload_ps(bns + oc, m) : zero;
      const __m256 vt = bnt ? _mm256_maskload_ps(bnt + oc, m) : zero;
      const __m256 vns = ns ? _mm256_maskload_ps(ns + oc, m) : zero;
      const __m256 vnt = nt ? _mm256_maskload_ps(nt + oc, m) : zero;
      const bool flush = (j & 63) == 56 || j + 8 >= no;
      const int keep = lane_bits(nc);
      for (int pp = 0; pp < np; ++pp) {
        const int64_t q = qt + pp;
        __m256 v = _mm256_cvtepi32_ps(t[pp]);  // exact: |dot| < 2^24
        if (alpha) v = _mm256_mul_ps(v, va);
        if (bias) v = _mm256_add_ps(v, vb);
        if (bns) {
          v = _mm256_mul_ps(v, vs);
          if (bnt) v = _mm256_add_ps(v, vt);
        }
        if (words0) {
          __m256 u = v;
          if (ns) {
            u = _mm256_mul_ps(u, vns);
            if (nt) u = _mm256_add_ps(u, vnt);
          }
          // Ordered >= : -0.0 >= 0 holds, NaN fails (-> -1), as binarize_pack.
          const int bits = _mm256_movemask_ps(_mm256_cmp_ps(u, zero, _CMP_GE_OQ)) & keep;
          word[pp] |= uint64_t(bits) << (j & 63);
          if (flush) {
            words0[q * CWo + (j >> 6)] = word[pp];
            word[pp] = 0;
          }
        }
        if (res0) v = _mm256_add_ps(v, _mm256_maskload_ps(res0 + q * rs[3] + j, m));
        if (up0) v = _mm256_add_ps(v, _mm256_maskload_ps(up0 + ((q0 + q) >> 1) * us[3] + j, m));
        store8(out0 + q * os[3] + j, m, nc == 8, p.stream_out, v);
      }
    }
  }
  if (p.stream_out) _mm_sfence();  // before the parallel region's barrier hands the output to other threads
  return true;
}

void pack_row_affine_nhwc_f32_avx2(const float* src, int64_t C, int64_t W, int64_t sw, const float* scale,
                                   const float* shift, uint64_t* dst, int64_t CW) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t w = 0; w < W; ++w) {
    const float* x = src + w * sw;
    uint64_t* d = dst + w * CW;
    for (int64_t k = 0; k < CW; ++k) {
      uint64_t word = 0;
      for (int j = 0; j < 8; ++j) {
        const int64_t c = 64 * k + 8 * j;
        if (c >= C) break;
        const __m256i m = lanes8(C - c);
        const __m256 u = _mm256_add_ps(
            _mm256_mul_ps(_mm256_maskload_ps(x + c, m), _mm256_maskload_ps(scale + c, m)), _mm256_maskload_ps(shift + c, m));
        const int bits = _mm256_movemask_ps(_mm256_cmp_ps(u, zero, _CMP_GE_OQ)) & lane_bits(C - c);
        word |= uint64_t(bits) << (8 * j);
      }
      d[k] = word;
    }
  }
}

void affine_row_nchw_f32_avx2(const float* src, int64_t C, int64_t W, int64_t sc, const float* scale,
                              const float* shift, float* dst) {
  for (int64_t c = 0; c < C; ++c) {
    const __m256 a = _mm256_set1_ps(scale[c]), b = _mm256_set1_ps(shift[c]);
    const float* x = src + c * sc;
    float* d = dst + c * W;
    int64_t w = 0;
    for (; w + 8 <= W; w += 8) _mm256_storeu_ps(d + w, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + w), a), b));
    if (w < W) {
      const __m256i m = lanes8(W - w);
      _mm256_maskstore_ps(d + w, m, _mm256_add_ps(_mm256_mul_ps(_mm256_maskload_ps(x + w, m), a), b));
    }
  }
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#else
namespace fastpose {
namespace core {
bool xnor_fused_epilogue_avx2(const XnorConvProblem&, int64_t, int64_t, int64_t, int, int64_t, int, const int32_t*,
                              int64_t, const int32_t*, const int32_t*) {
  return false;
}
void pack_row_affine_nhwc_f32_avx2(const float*, int64_t, int64_t, int64_t, const float*, const float*, uint64_t*,
                                   int64_t) {}
void affine_row_nchw_f32_avx2(const float*, int64_t, int64_t, int64_t, const float*, const float*, float*) {}
}  // namespace core
}  // namespace fastpose
#endif
