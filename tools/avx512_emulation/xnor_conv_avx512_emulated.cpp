// The AVX-512 kernels of the XNOR convolution (popcount GEMM, float32 bit packing) compiled against
// SIMDe's portable emulation of the intrinsics, so the AVX-512 path can be checked on machines without
// AVX-512 (tools/avx512_emulation/run_xnor_conv.sh). Test-only; the library uses the real intrinsics.
#include <cstdlib>

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <algorithm>
#include <cstdint>
#include <cstring>
typedef simde__mmask8 __mmask8;
typedef simde__mmask16 __mmask16;
typedef simde__mmask32 __mmask32;
typedef simde__mmask64 __mmask64;
// shims for intrinsics simde 0.7.4 lacks (lane by lane; masked lanes are never read)
static inline simde__m256i _mm512_maskz_cvtepi64_epi32(__mmask8 k, simde__m512i a) {
  int64_t v[8]; int32_t r[8]; std::memcpy(v, &a, 64);
  for (int i = 0; i < 8; ++i) r[i] = (k >> i & 1) ? static_cast<int32_t>(v[i]) : 0;
  simde__m256i o; std::memcpy(&o, r, 32); return o; }
#define _mm512_mask_cmp_ps_mask(k, a, b, imm) static_cast<__mmask16>((k) & _mm512_cmp_ps_mask((a), (b), (imm)))
static inline simde__m512 _mm512_maskz_loadu_ps(__mmask16 k, const void* p) {
  float v[16];
  for (int i = 0; i < 16; ++i) v[i] = (k >> i & 1) ? static_cast<const float*>(p)[i] : 0.f;
  simde__m512 o; std::memcpy(&o, v, 64); return o; }
static inline uint64_t _cvtmask64_u64(__mmask64 k) { return static_cast<uint64_t>(k); }
#include "core/xnor_conv.h"
namespace fastpose { namespace core { namespace {
#include "core/xnor_conv_avx512_kernel.h"
}
#include "core/xnor_conv_avx512_entry.h"
int64_t xnor_popcount_peak_avx512(int64_t iters) { return iters * 512; }  // not a measurement here
// The fused epilogue's AVX-512 forms (xnor_fused_avx512.cpp) are not under test here: xnor_fused.cpp
// links against them, the comparison never reaches them (false = take the portable epilogue).
bool xnor_fused_epilogue_avx512(const XnorConvProblem&, int64_t, int64_t, int64_t, int, int64_t, int, const int32_t*,
                                int64_t, const int32_t*, const int32_t*) { return false; }
void pack_row_affine_nhwc_f32_avx512(const float*, int64_t, int64_t, int64_t, const float*, const float*, uint64_t*,
                                     int64_t) { std::abort(); }
}}
