#include "core/isa.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace fastpose {
namespace core {

bool isa_supported(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  switch (isa) {
    case Isa::Portable:
      return true;
    case Isa::Avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c") && __builtin_cpu_supports("popcnt");
    case Isa::Avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq") &&
             isa_supported(Isa::Avx2);
  }
  return false;
#else
  return isa == Isa::Portable;
#endif
}

Isa detected_isa() {
  static const Isa best = [] {
    if (isa_supported(Isa::Avx512)) return Isa::Avx512;
    if (isa_supported(Isa::Avx2)) return Isa::Avx2;
    return Isa::Portable;
  }();
  return best;
}

Isa active_isa() {
  const char* env = std::getenv("FASTPOSE_ISA");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "auto") == 0) return detected_isa();
  Isa want;
  if (std::strcmp(env, "avx512") == 0) {
    want = Isa::Avx512;
  } else if (std::strcmp(env, "avx2") == 0) {
    want = Isa::Avx2;
  } else if (std::strcmp(env, "portable") == 0) {
    want = Isa::Portable;
  } else {
    throw std::invalid_argument(std::string("FASTPOSE_ISA must be one of avx512, avx2, portable, auto; got '") +
                                env + "'");
  }
  if (!isa_supported(want)) {
    throw std::invalid_argument(std::string("FASTPOSE_ISA=") + env + " but this CPU does not support it (best: " +
                                isa_name(detected_isa()) + ")");
  }
  return want;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Portable:
      return "portable";
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx512:
      return "avx512";
  }
  return "unknown";
}

}  // namespace core
}  // namespace fastpose
