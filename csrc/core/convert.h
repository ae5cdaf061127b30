// Row conversions between float and float16 / bfloat16: F16C / AVX2 where the CPU has them (and
// FASTPOSE_ISA allows), portable otherwise. Used by the memory-bound merge kernels, whose 16-bit
// paths would otherwise convert element by element.
#pragma once
#include <cstdint>

#include "core/dtypes.h"
#include "core/isa.h"

namespace fastpose {
namespace core {

// type is F16 or BF16.
void to_float_row(ElemType type, const uint16_t* src, float* dst, int64_t n, Isa isa);
void from_float_row(ElemType type, const float* src, uint16_t* dst, int64_t n, Isa isa);

}  // namespace core
}  // namespace fastpose
