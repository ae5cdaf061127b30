// Storage-type helpers shared by the upsample_add and hr_fuse kernels: load to the arithmetic
// type, store back, and the dispatch on ElemType. These kernels are memory-bound, so plain loops
// that the compiler vectorises for the baseline ISA are enough (no ISA dispatch).
#pragma once
#include <cstdint>
#include <stdexcept>

#include "core/dtypes.h"

namespace fastpose {
namespace core {
namespace merge {

struct Half {
  uint16_t v;
};
struct BF16 {
  uint16_t v;
};

template <class T>
struct Storage {
  using A = T;  // float, double
  static inline A ld(T v) { return v; }
  static inline T st(A v) { return v; }
};
template <>
struct Storage<Half> {
  using A = float;
  static inline A ld(Half h) { return half_to_float(h.v); }
  static inline Half st(A v) { return {float_to_half(v)}; }
};
template <>
struct Storage<BF16> {
  using A = float;
  static inline A ld(BF16 h) { return bf16_to_float(h.v); }
  static inline BF16 st(A v) { return {float_to_bf16(v)}; }
};

template <class F>
inline void dispatch(ElemType t, F&& f) {
  switch (t) {
    case ElemType::F32:
      return f(static_cast<float*>(nullptr));
    case ElemType::F64:
      return f(static_cast<double*>(nullptr));
    case ElemType::F16:
      return f(static_cast<Half*>(nullptr));
    case ElemType::BF16:
      return f(static_cast<BF16*>(nullptr));
  }
  throw std::invalid_argument("merge kernels: unknown element type");
}

inline int64_t gcd(int64_t a, int64_t b) { return b == 0 ? a : gcd(b, a % b); }
inline int64_t lcm(int64_t a, int64_t b) { return a / gcd(a, b) * b; }

}  // namespace merge
}  // namespace core
}  // namespace fastpose
