// Storage-type helpers shared by the upsample_add and hr_fuse kernels: load to the arithmetic
// type, store back, and the dispatch on ElemType. These kernels are memory-bound, so plain loops
// that the compiler vectorises for the baseline ISA are enough (no ISA dispatch).
#pragma once
#include <cstdint>
#include <stdexcept>

#include "core/convert.h"
#include "core/dtypes.h"
#include "core/upsample_add.h"

namespace fastpose {
namespace core {
namespace merge {

struct Half {
  uint16_t v;
};
struct BF16 {
  uint16_t v;
};

// Whole rows in the arithmetic type A: float and double rows are used in place; float16 / bfloat16
// rows go through a float buffer with vectorised conversions (core/convert.h).
template <class T>
struct Rows {
  using A = T;
  static inline const A* load(const T* src, int64_t, A*, const MergeShape&) { return src; }
  static inline A* out(T* dst, A*) { return dst; }
  static inline void commit(const A*, T*, int64_t, const MergeShape&) {}
};
template <class T16, ElemType kType>
struct Rows16 {
  using A = float;
  static inline const A* load(const T16* src, int64_t n, A* buf, const MergeShape& s) {
    to_float_row(kType, reinterpret_cast<const uint16_t*>(src), buf, n, s.isa);
    return buf;
  }
  static inline A* out(T16*, A* buf) { return buf; }
  static inline void commit(const A* buf, T16* dst, int64_t n, const MergeShape& s) {
    from_float_row(kType, buf, reinterpret_cast<uint16_t*>(dst), n, s.isa);
  }
};
template <>
struct Rows<Half> : Rows16<Half, ElemType::F16> {};
template <>
struct Rows<BF16> : Rows16<BF16, ElemType::BF16> {};

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
template <class A>
inline void expand_row(const A* src, int64_t n, int64_t s, A* dst) {
  switch (s) {
    case 1:
      for (int64_t k = 0; k < n; ++k) dst[k] = src[k];
      return;
    case 2:
      for (int64_t k = 0; k < n; ++k) dst[2 * k] = dst[2 * k + 1] = src[k];
      return;
    case 4:
      for (int64_t k = 0; k < n; ++k) {
        const A v = src[k];
        for (int q = 0; q < 4; ++q) dst[4 * k + q] = v;
      }
      return;
    default:
      for (int64_t k = 0; k < n; ++k) {
        const A v = src[k];
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
