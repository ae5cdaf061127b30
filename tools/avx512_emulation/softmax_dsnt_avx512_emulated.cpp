// The AVX-512 instantiation of the softmax + DSNT kernel compiled against SIMDe's portable
// emulation of the intrinsics, so the AVX-512 path can be checked on machines without AVX-512
// (tools/avx512_emulation/run.sh). Test-only; the library uses the real intrinsics.
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <cstdint>
#include <cstring>
#define _MM_FROUND_NO_EXC SIMDE_MM_FROUND_NO_EXC
#include "core/dtypes.h"
template <class O, class I> static inline O bitc(const I& i) { O o; std::memcpy(&o, &i, sizeof(O)); return o; }
static inline simde__m512i _mm512_cvtps_epi32(simde__m512 a) { float v[16]; int32_t r[16]; std::memcpy(v, &a, 64);
  for (int i = 0; i < 16; ++i) r[i] = (int32_t)__builtin_nearbyintf(v[i]); return bitc<simde__m512i>(r); }
static inline simde__m512 _mm512_cvtepi32_ps(simde__m512i a) { int32_t v[16]; float r[16]; std::memcpy(v, &a, 64);
  for (int i = 0; i < 16; ++i) r[i] = (float)v[i]; return bitc<simde__m512>(r); }
static inline simde__m512 _mm512_cvtph_ps(simde__m256i a) { uint16_t v[16]; float r[16]; std::memcpy(v, &a, 32);
  for (int i = 0; i < 16; ++i) r[i] = fastpose::core::half_to_float(v[i]); return bitc<simde__m512>(r); }
static inline simde__m512i _mm512_cvtepu16_epi32(simde__m256i a) { uint16_t v[16]; int32_t r[16]; std::memcpy(v, &a, 32);
  for (int i = 0; i < 16; ++i) r[i] = v[i]; return bitc<simde__m512i>(r); }
static inline simde__m256i _mm512_cvtps_ph(simde__m512 a, int) { float v[16]; uint16_t r[16]; std::memcpy(v, &a, 64);
  for (int i = 0; i < 16; ++i) r[i] = fastpose::core::float_to_half(v[i]); return bitc<simde__m256i>(r); }
// shims for intrinsics simde 0.7.4 lacks (test-only emulation of the AVX-512 path)
typedef simde__mmask16 __mmask16;
static inline simde__m512 _mm512_mask_loadu_ps(simde__m512 src, __mmask16 k, const float* p) {
  float v[16]; std::memcpy(v, &src, 64); for (int i = 0; i < 16; ++i) if (k >> i & 1) v[i] = p[i];
  simde__m512 r; std::memcpy(&r, v, 64); return r; }
static inline void _mm512_mask_storeu_ps(float* p, __mmask16 k, simde__m512 a) {
  float v[16]; std::memcpy(v, &a, 64); for (int i = 0; i < 16; ++i) if (k >> i & 1) p[i] = v[i]; }
static inline float _mm512_reduce_add_ps(simde__m512 a) { float v[16]; std::memcpy(v, &a, 64); float s = 0; for (float x : v) s += x; return s; }
static inline float _mm512_reduce_max_ps(simde__m512 a) { float v[16]; std::memcpy(v, &a, 64); float s = v[0]; for (float x : v) s = x > s ? x : s; return s; }
#include "core/softmax_dsnt.h"
namespace fastpose { namespace core { namespace {
#include "core/simd/vec_avx512.h"
#include "core/softmax_dsnt_kernel.h"
}
int64_t softmax_dsnt_forward_avx512(const DsntProblem& p, int64_t begin, int64_t end, float* stats, float* div, float* scratch) {
  DsntKernel<VecAvx512> k(p, scratch); return k.forward(begin, end, stats, div); }
void softmax_dsnt_backward_avx512(const DsntProblem& p, int64_t begin, int64_t end, const float* stats, const float* gcoords, const float* gdiv, void* out, float* scratch) {
  DsntKernel<VecAvx512> k(p, scratch); k.backward(begin, end, stats, gcoords, gdiv, out); }
}}
