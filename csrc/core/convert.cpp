#include "core/convert.h"

namespace fastpose {
namespace core {

#if defined(__x86_64__)
void to_float_row_avx2(ElemType type, const uint16_t* src, float* dst, int64_t n);
void from_float_row_avx2(ElemType type, const float* src, uint16_t* dst, int64_t n);
#endif

void to_float_row(ElemType type, const uint16_t* src, float* dst, int64_t n, Isa isa) {
#if defined(__x86_64__)
  if (isa != Isa::Portable) return to_float_row_avx2(type, src, dst, n);
#endif
  if (type == ElemType::F16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
  }
}

void from_float_row(ElemType type, const float* src, uint16_t* dst, int64_t n, Isa isa) {
#if defined(__x86_64__)
  if (isa != Isa::Portable) return from_float_row_avx2(type, src, dst, n);
#endif
  if (type == ElemType::F16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_half(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i]);
  }
}

}  // namespace core
}  // namespace fastpose
