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

// dst[k * s + q] = ld(src[k]) for k < n, q < s: nearest expansion of a row by an integer factor.
// The common factors get constant inner loops, which the compiler unrolls and vectorises.
template <class T, class A, class S>
inline void expand_row(const T* src, int64_t n, int64_t s, A* dst) {
  switch (s) {
    case 1:
      for (int64_t k = 0; k < n; ++k) dst[k] = S::ld(src[k]);
      return;
    case 2:
      for (int64_t k = 0; k < n; ++k) dst[2 * k] = dst[2 * k + 1] = S::ld(src[k]);
      return;
    case 4:
      for (int64_t k = 0; k < n; ++k) {
        const A v = S::ld(src[k]);
        for (int q = 0; q < 4; ++q) dst[4 * k + q] = v;
      }
      return;
    default:
      for (int64_t k = 0; k < n; ++k) {
        const A v = S::ld(src[k]);
        for (int64_t q = 0; q < s; ++q) dst[k * s + q] = v;
      }
  }
}

// dst[k] += sum_q src[k * s + q] for k < n: the adjoint of expand_row.
template <class A>
inline void reduce_row_add(const A* src, int64_t n, int64_t s, A* dst) {
  switch (s) {
    case 1:
      for (int64_t k = 0; k < n; ++k) dst[k] += src[k];
      return;
    case 2:
      for (int64_t k = 0; k < n; ++k) dst[k] += src[2 * k] + src[2 * k + 1];
      return;
    default:
      for (int64_t k = 0; k < n; ++k) {
        A v = 0;
        for (int64_t q = 0; q < s; ++q) v += src[k * s + q];
        dst[k] += v;
      }
  }
}

inline int64_t gcd(int64_t a, int64_t b) { return b == 0 ? a : gcd(b, a % b); }
inline int64_t lcm(int64_t a, int64_t b) { return a / gcd(a, b) * b; }

}  // namespace merge
}  // namespace core
}  // namespace fastpose
