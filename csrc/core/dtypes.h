// Element types the torch-free kernels understand, and scalar float16/bfloat16 conversions.
#pragma once
#include <cstdint>
#include <cstring>

namespace fastpose {
namespace core {

enum class ElemType { F32 = 0, F16 = 1, BF16 = 2, F64 = 3 };

inline int elem_size(ElemType t) { return t == ElemType::F64 ? 8 : (t == ElemType::F32 ? 4 : 2); }

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    // subnormal half: value = mant * 2^-24
    float f = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -f : f;
  }
  return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

// Round to nearest even, with overflow to inf and gradual underflow.
inline uint16_t float_to_half(float f) {
  uint32_t u = float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7e00u;                 // nan
  if (u >= 0x477ff000u) return sign | 0x7c00u;                // overflow (>= 65520 rounds to inf)
  if (u < 0x38800000u) {                                      // below the smallest normal half
    // subnormal: the magic-number trick adds 0.5 (2^-1) so the FPU rounds mantissa bits to even
    float a = bits_to_float(u) + 0.5f;
    return sign | static_cast<uint16_t>(float_to_bits(a) - 0x3f000000u);
  }
  const uint32_t mant_odd = (u >> 13) & 1u;
  u += 0xc8000fffu + mant_odd;  // re-bias exponent (-112 << 23) and round
  return sign | static_cast<uint16_t>(u >> 13);
}

}  // namespace core
}  // namespace fastpose
