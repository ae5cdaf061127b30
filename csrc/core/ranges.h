// Work handed out as [begin, end) ranges through a plain function pointer (the torch-free core cannot
// take a template callback across its compilation units): next(ctx, &begin, &end) yields the next range
// or returns false when there is none. cpu/parallel.h pulls chunks from a shared counter this way.
#pragma once
#include <cstdint>

namespace fastpose {

using RangeSource = bool (*)(void* ctx, int64_t* begin, int64_t* end);

// The context of single_range: yields [b, e) once (nothing when empty).
struct SingleRange {
  int64_t b, e;
  bool done = false;
};

inline bool single_range(void* ctx, int64_t* begin, int64_t* end) {
  auto* r = static_cast<SingleRange*>(ctx);
  if (r->done || r->b >= r->e) return false;
  *begin = r->b, *end = r->e, r->done = true;
  return true;
}

}  // namespace fastpose
