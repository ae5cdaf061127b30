// Run-time choice of the CPU instruction set for the kernels of core/.
// The library is compiled for baseline x86-64; AVX2 / AVX-512 kernels are compiled per function with
// __attribute__((target(...))) and only called after cpuid says the core has them.
#pragma once
#include <string>

namespace fastpose {
namespace core {

enum class Isa { Portable = 0, Avx2 = 1, Avx512 = 2 };

// Best instruction set this core supports (AVX-512 here means F + BW + VL + VPOPCNTDQ).
Isa detected_isa();
// The instruction set kernels use: FASTPOSE_ISA=avx512|avx2|portable if set (read on every call so
// tests can switch it), else detected_isa(). Throws std::invalid_argument for an unknown value or
// an ISA the core does not have.
Isa active_isa();
const char* isa_name(Isa isa);
bool isa_supported(Isa isa);

}  // namespace core
}  // namespace fastpose
