// Minimal test harness for the C++ unit tests of core/ (no dependency beyond the standard library).
#pragma once
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>

#include "core/isa.h"

#define FP_CHECK(cond)                                                          \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                             \
    }                                                                           \
  } while (0)

// Runs `body` under the ISA forced by FASTPOSE_ISA; exits 77 (ctest: skipped) if the CPU lacks it.
template <class F>
int run_isa_test(const char* name, F body) {
  fastpose::core::Isa isa;
  try {
    isa = fastpose::core::active_isa();
  } catch (const std::invalid_argument& e) {
    std::printf("%s: skipped (%s)\n", name, e.what());
    return 77;
  }
  body(isa);
  std::printf("%s [%s]: ok\n", name, fastpose::core::isa_name(isa));
  return 0;
}
