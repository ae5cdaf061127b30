// AVX-512 forms of the XNOR epilogue and of the BatchNorm-folded pack (xnor_fused.cpp), float32:
// channels contiguous (NHWC rows: what the packed HPM model uses) or pixels contiguous (NCHW rows: what
// xnor_conv2d returns for NCHW input), called only when cpuid has AVX-512.
// The multiplies and adds use the explicit-rounding intrinsics (round to nearest even, as MXCSR's
// default): they are separate instructions the compiler cannot contract into an FMA, so each rounds
// once exactly as the portable code and the PyTorch reference do.
#include <immintrin.h>

#include <cstdint>

#include "core/xnor_conv.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,popcnt")
namespace fastpose {
namespace core {
namespace {

constexpr int kRn = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

inline __m512 mul_rn(__m512 a, __m512 b) { return _mm512_mul_round_ps(a, b, kRn); }
inline __m512 add_rn(__m512 a, __m512 b) { return _mm512_add_round_ps(a, b, kRn); }
inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1); }

// In-register transpose of a 16x16 int32 tile: r[i] = row i -> r[j] = column j.
inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // r[4b + k], 128-bit lane L = column 4L + k of rows 4b..4b+3; collect the four row groups.
  for (int k = 0; k < 4; ++k) {
    t[k] = _mm512_shuffle_i32x4(r[k], r[4 + k], 0x88);  // cols k, 8+k of rows 0..7
    t[4 + k] = _mm512_shuffle_i32x4(r[k], r[4 + k], 0xdd);  // cols 4+k, 12+k of rows 0..7
    t[8 + k] = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0x88);  // same for rows 8..15
    t[12 + k] = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0xdd);
  }
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm512_shuffle_i32x4(t[k], t[8 + k], 0x88);
    r[8 + k] = _mm512_shuffle_i32x4(t[k], t[8 + k], 0xdd);
    r[4 + k] = _mm512_shuffle_i32x4(t[4 + k], t[12 + k], 0x88);
    r[12 + k] = _mm512_shuffle_i32x4(t[4 + k], t[12 + k], 0xdd);
  }
}

// Channel-major output (NCHW-like: pixels contiguous along W). S rows are already pixel-contiguous,
// so each channel is a run of plain vector loads, arithmetic and stores; no transpose.
bool channel_major(const XnorConvProblem& p, const int64_t os[4], int64_t n, int64_t oh, int64_t o0, int no,
                   int64_t q0, int nq, const int32_t* S, int64_t s_ostride, const int32_t* k0, const int32_t* extra) {
  const int64_t* rs = p.res_strides;
  // Packed bits want a pixel's channels together (the NHWC path's transpose); strided pixels gain nothing.
  // (an up_residual, whose pixels repeat in pairs along W, is left to the portable form here)
  if (p.out_packed || os[3] != 1 || (p.residual && rs[3] != 1) || p.up_residual) return false;
  const float* alpha = static_cast<const float*>(p.alpha);
  const float* bias = static_cast<const float*>(p.bias);
  const float* bns = static_cast<const float*>(p.bn_scale);
  const float* bnt = static_cast<const float*>(p.bn_shift);
  const float* res = static_cast<const float*>(p.residual);
  const bool stream = p.stream_out;
  if (!bns && !res && !extra && nq <= 64) {
    // xnor_conv2d's own case (alpha, bias): short rows (a small layer's 1-4 vectors per channel) make the
    // per-channel work the cost, so k0 is loaded once for all channels and nothing else is tested inside.
    __m512i kv[4];
    __mmask16 km[4];
    const int nt = (nq + 15) / 16;
    for (int t = 0; t < nt; ++t) km[t] = lanes(nq - 16 * t), kv[t] = _mm512_maskz_loadu_epi32(km[t], k0 + 16 * t);
    float* const dst0 = static_cast<float*>(p.out) + n * os[0] + oh * os[2] + q0;
    for (int o = 0; o < no; ++o) {
      const int64_t oc = o0 + o;
      float* dst = dst0 + oc * os[1];
      const int32_t* s = S + o * s_ostride;
      const __m512 va = _mm512_set1_ps(alpha ? alpha[oc] : 1.f), vb = _mm512_set1_ps(bias ? bias[oc] : 0.f);
      for (int t = 0; t < nt; ++t) {
        __m512 v = _mm512_cvtepi32_ps(
            _mm512_sub_epi32(kv[t], _mm512_slli_epi32(_mm512_maskz_loadu_epi32(km[t], s + 16 * t), 1)));
        if (alpha) v = mul_rn(v, va);
        if (bias) v = add_rn(v, vb);
        float* d = dst + 16 * t;
        if (stream && km[t] == 0xffff && (reinterpret_cast<uintptr_t>(d) & 63) == 0)
          _mm512_stream_ps(d, v);
        else
          _mm512_mask_storeu_ps(d, km[t], v);
      }
    }
    if (stream) _mm_sfence();
    return true;
  }
  for (int o = 0; o < no; ++o) {
    const int64_t oc = o0 + o;
    float* dst = static_cast<float*>(p.out) + n * os[0] + oc * os[1] + oh * os[2] + q0;
    const float* r = res ? res + n * rs[0] + oc * rs[1] + oh * rs[2] + q0 : nullptr;
    const int32_t* s = S + o * s_ostride;
    const int32_t* e = extra ? extra + o * s_ostride : nullptr;
    const __m512 va = _mm512_set1_ps(alpha ? alpha[oc] : 0.f), vb = _mm512_set1_ps(bias ? bias[oc] : 0.f);
    const __m512 vs = _mm512_set1_ps(bns ? bns[oc] : 0.f), vt = _mm512_set1_ps(bnt ? bnt[oc] : 0.f);
    for (int q = 0; q < nq; q += 16) {
      const __mmask16 m = lanes(nq - q);
      __m512i dot = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, k0 + q),
                                     _mm512_slli_epi32(_mm512_maskz_loadu_epi32(m, s + q), 1));
      if (e) dot = _mm512_sub_epi32(dot, _mm512_slli_epi32(_mm512_maskz_loadu_epi32(m, e + q), 1));
      __m512 v = _mm512_cvtepi32_ps(dot);  // exact: |dot| < 2^24
      if (alpha) v = mul_rn(v, va);
      if (bias) v = add_rn(v, vb);
      if (bns) {
        v = mul_rn(v, vs);
        if (bnt) v = add_rn(v, vt);
      }
      if (r) v = add_rn(v, _mm512_maskz_loadu_ps(m, r + q));
      float* d = dst + q;
      if (stream && m == 0xffff && (reinterpret_cast<uintptr_t>(d) & 63) == 0)
        _mm512_stream_ps(d, v);
      else
        _mm512_mask_storeu_ps(d, m, v);
    }
  }
  if (stream) _mm_sfence();
  return true;
}

}  // namespace

bool xnor_fused_epilogue_avx512(const XnorConvProblem& p, int64_t n, int64_t oh, int64_t o0, int no, int64_t q0,
                                int nq, const int32_t* S, int64_t s_ostride, const int32_t* k0, const int32_t* extra) {
  if (p.out_type != ElemType::F32) return false;
  int64_t os[4];
  out_strides_of(p, os);
  if (os[1] != 1) return channel_major(p, os, n, oh, o0, no, q0, nq, S, s_ostride, k0, extra);
  if (p.residual && p.res_strides[1] != 1) return false;
  if (p.up_residual && p.up_strides[1] != 1) return false;
  if (p.out_packed && (o0 % 64 != 0 || (no % 64 != 0 && o0 + no != p.Cout))) return false;
  if (s_ostride * 16 > (int64_t(1) << 30)) return false;
  const float* alpha = static_cast<const float*>(p.alpha);
  const float* bias = static_cast<const float*>(p.bias);
  const float* bns = static_cast<const float*>(p.bn_scale);
  const float* bnt = static_cast<const float*>(p.bn_shift);
  const float* ns = static_cast<const float*>(p.next_scale);
  const float* nt = static_cast<const float*>(p.next_shift);
  const float* res = static_cast<const float*>(p.residual);
  const int64_t* rs = p.res_strides;
  const int64_t CWo = xnor_words(p.Cout);
  // S is (channel, pixel) per row; the output wants channels contiguous: gather one pixel's 16 channels.
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int32_t>(s_ostride)));
  const __m512 zero = _mm512_setzero_ps();
  float* const out0 = static_cast<float*>(p.out) + n * os[0] + oh * os[2] + q0 * os[3] + o0;
  const float* const res0 = res ? res + n * rs[0] + oh * rs[2] + q0 * rs[3] + o0 : nullptr;
  const int64_t* us = p.up_strides;
  const float* const up0 = p.up_residual ? static_cast<const float*>(p.up_residual) + n * us[0] + (oh >> 1) * us[2] + o0
                                         : nullptr;
  uint64_t* const words0 = p.out_packed ? p.out_packed + ((n * p.Ho + oh) * p.Wo + q0) * CWo + (o0 >> 6) : nullptr;
  const bool stream = p.stream_out;
  const bool prefetch = p.prefetch_residual;
  constexpr int kAhead = 32;
  if (!extra) {
    // Tiles of 16 pixels x 16 channels: contiguous loads of S rows, transposed in registers, so the
    // channel-contiguous output needs no gathers.
    for (int qt = 0; qt < nq; qt += 16) {
      const int np = nq - qt < 16 ? nq - qt : 16;
      const __mmask16 pm = lanes(np);
      const __m512i kv = _mm512_maskz_loadu_epi32(pm, k0 + qt);
      uint64_t word[16] = {0};
      for (int j = 0; j < no; j += 16) {
        const int nc = no - j < 16 ? no - j : 16;
        const __mmask16 m = lanes(nc);
        __m512i t[16];
        for (int i = 0; i < 16; ++i)
          t[i] = i < nc ? _mm512_sub_epi32(kv, _mm512_slli_epi32(
                                                   _mm512_maskz_loadu_epi32(pm, S + (j + i) * s_ostride + qt), 1))
                        : _mm512_setzero_si512();
        transpose16(t);  // t[pp]: the dots of pixel qt + pp, channels j .. j + 15
        const int64_t oc = o0 + j;
        const __m512 va = alpha ? _mm512_maskz_loadu_ps(m, alpha + oc) : zero;
        const __m512 vb = bias ? _mm512_maskz_loadu_ps(m, bias + oc) : zero;
        const __m512 vs = bns ? _mm512_maskz_loadu_ps(m, bns + oc) : zero;
        const __m512 vt = bnt ? _mm512_maskz_loadu_ps(m, bnt + oc) : zero;
        const __m512 vns = ns ? _mm512_maskz_loadu_ps(m, ns + oc) : zero;
        const __m512 vnt = nt ? _mm512_maskz_loadu_ps(m, nt + oc) : zero;
        const bool flush = (j & 63) == 48 || j + 16 >= no;
        for (int pp = 0; pp < np; ++pp) {
          const int64_t q = qt + pp;
          __m512 v = _mm512_cvtepi32_ps(t[pp]);  // exact: |dot| < 2^24
          if (alpha) v = mul_rn(v, va);
          if (bias) v = add_rn(v, vb);
          if (bns) {
            v = mul_rn(v, vs);
            if (bnt) v = add_rn(v, vt);
          }
          if (words0) {
            __m512 u = v;
            if (ns) {
              u = mul_rn(u, vns);
              if (nt) u = add_rn(u, vnt);
            }
            word[pp] |= uint64_t(_mm512_mask_cmp_ps_mask(m, u, zero, _CMP_GE_OQ)) << (j & 63);
            if (flush) {
              words0[q * CWo + (j >> 6)] = word[pp];
              word[pp] = 0;
            }
          }
          if (res0) {
            // The residual is a channel run per pixel, a whole row of a wider tensor apart: the hardware
            // prefetchers miss it and the load stalls on memory. Ask for the same run kAhead pixels on.
            if (prefetch && q + kAhead < nq)
              _mm_prefetch(reinterpret_cast<const char*>(res0 + (q + kAhead) * rs[3] + j), _MM_HINT_T0);
            v = add_rn(v, _mm512_maskz_loadu_ps(m, res0 + q * rs[3] + j));
          }
          if (up0) v = add_rn(v, _mm512_maskz_loadu_ps(m, up0 + ((q0 + q) >> 1) * us[3] + j));
          float* d = out0 + q * os[3] + j;
          if (stream && nc == 16 && (reinterpret_cast<uintptr_t>(d) & 63) == 0)
            _mm512_stream_ps(d, v);
          else
            _mm512_mask_storeu_ps(d, m, v);
        }
      }
    }
    if (stream) _mm_sfence();  // before the parallel region's barrier hands the output to other threads
    return true;
  }
  for (int q = 0; q < nq; ++q) {
    const int64_t ow = q0 + q;
    float* dst = static_cast<float*>(p.out) + n * os[0] + oh * os[2] + ow * os[3] + o0;
    const float* r = res ? res + n * rs[0] + oh * rs[2] + ow * rs[3] + o0 : nullptr;
    uint64_t* words = p.out_packed ? p.out_packed + ((n * p.Ho + oh) * p.Wo + ow) * CWo + (o0 >> 6) : nullptr;
    const __m512i kq = _mm512_set1_epi32(k0[q]);
    uint64_t word = 0;
    for (int j = 0; j < no; j += 16) {
      const __mmask16 m = lanes(no - j);
      const int32_t* sp = S + j * s_ostride + q;
      __m512i dot = _mm512_sub_epi32(kq, _mm512_slli_epi32(
                                             _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, sp, 4), 1));
      if (extra) {
        const __m512i e = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, extra + j * s_ostride + q, 4);
        dot = _mm512_sub_epi32(dot, _mm512_slli_epi32(e, 1));
      }
      __m512 v = _mm512_cvtepi32_ps(dot);  // exact: |dot| < 2^24
      const int64_t oc = o0 + j;
      if (alpha) v = mul_rn(v, _mm512_maskz_loadu_ps(m, alpha + oc));
      if (bias) v = add_rn(v, _mm512_maskz_loadu_ps(m, bias + oc));
      if (bns) {
        v = mul_rn(v, _mm512_maskz_loadu_ps(m, bns + oc));
        if (bnt) v = add_rn(v, _mm512_maskz_loadu_ps(m, bnt + oc));
      }
      if (words) {
        __m512 u = v;
        if (ns) {
          u = mul_rn(u, _mm512_maskz_loadu_ps(m, ns + oc));
          if (nt) u = add_rn(u, _mm512_maskz_loadu_ps(m, nt + oc));
        }
        // Ordered >= : -0.0 >= 0 holds, NaN fails (-> -1), as binarize_pack.
        const __mmask16 b = _mm512_mask_cmp_ps_mask(m, u, zero, _CMP_GE_OQ);
        word |= uint64_t(b) << (j & 63);
        if ((j & 63) == 48 || j + 16 >= no) {
          words[j >> 6] = word;
          word = 0;
        }
      }
      if (r) v = add_rn(v, _mm512_maskz_loadu_ps(m, r + j));
      if (up0) v = add_rn(v, _mm512_maskz_loadu_ps(m, up0 + (ow >> 1) * us[3] + j));
      _mm512_mask_storeu_ps(dst + j, m, v);
    }
  }
  return true;
}

void pack_row_affine_nhwc_f32_avx512(const float* src, int64_t C, int64_t W, int64_t sw, const float* scale,
                                     const float* shift, uint64_t* dst, int64_t CW) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t w = 0; w < W; ++w) {
    const float* x = src + w * sw;
    uint64_t* d = dst + w * CW;
    for (int64_t k = 0; k < CW; ++k) {
      uint64_t word = 0;
      for (int j = 0; j < 4; ++j) {
        const int64_t c = 64 * k + 16 * j;
        if (c >= C) break;
        const __mmask16 m = lanes(C - c);
        const __m512 u = add_rn(mul_rn(_mm512_maskz_loadu_ps(m, x + c), _mm512_maskz_loadu_ps(m, scale + c)),
                                _mm512_maskz_loadu_ps(m, shift + c));
        word |= uint64_t(_mm512_mask_cmp_ps_mask(m, u, zero, _CMP_GE_OQ)) << (16 * j);
      }
      d[k] = word;
    }
  }
}

void affine_row_nchw_f32_avx512(const float* src, int64_t C, int64_t W, int64_t sc, const float* scale,
                                const float* shift, float* dst) {
  for (int64_t c = 0; c < C; ++c) {
    const __m512 a = _mm512_set1_ps(scale[c]), b = _mm512_set1_ps(shift[c]);
    const float* x = src + c * sc;
    float* d = dst + c * W;
    for (int64_t w = 0; w < W; w += 16) {
      const __mmask16 m = lanes(W - w);
      _mm512_mask_storeu_ps(d + w, m, add_rn(mul_rn(_mm512_maskz_loadu_ps(m, x + w), a), b));
    }
  }
}

}  // namespace core
}  // namespace fastpose
#pragma GCC pop_options
#else
namespace fastpose {
namespace core {
bool xnor_fused_epilogue_avx512(const XnorConvProblem&, int64_t, int64_t, int64_t, int, int64_t, int, const int32_t*,
                                int64_t, const int32_t*, const int32_t*) {
  return false;
}
void pack_row_affine_nhwc_f32_avx512(const float*, int64_t, int64_t, int64_t, const float*, const float*, uint64_t*,
                                     int64_t) {}
void affine_row_nchw_f32_avx512(const float*, int64_t, int64_t, int64_t, const float*, const float*, float*) {}
}  // namespace core
}  // namespace fastpose
#endif
