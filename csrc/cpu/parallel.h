// Dynamic scheduling over independent work units.
//
// at::parallel_for splits a range into one contiguous piece per thread before any thread starts, so
// the slowest thread sets the time. On the 2-vCPU VMs this library is measured on, one vCPU is often
// slower than the other by 20-40% for milliseconds at a time (another guest on the host core), and a
// statically split op then runs at the slow core's speed. Here each thread takes the next chunk of
// units from a shared counter until none are left, so a slow or late thread just takes fewer.
// Units must be independent (any order, any thread). FASTPOSE_SCHEDULE=static restores the static
// split (read per call, for A/B measurements).
#pragma once
#include <ATen/Parallel.h>

#include "core/ranges.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace fastpose {

inline bool static_schedule_forced() {
  const char* e = std::getenv("FASTPOSE_SCHEDULE");
  return e != nullptr && std::strcmp(e, "static") == 0;
}

// [0, units) in chunks of about units / (8 * threads) (at least min_chunk). g(next, ctx) runs once per
// thread and pulls its chunks with next(ctx, &begin, &end) (core/ranges.h) until that returns false, so
// per-call setup (scratch buffers, tables) is paid once per thread, not once per chunk.
template <class G>
void parallel_unit_ranges(int64_t units, int64_t min_chunk, const G& g) {
  if (units <= 0) return;
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (threads <= 1 || units <= min_chunk) {
    SingleRange r{0, units};
    g(single_range, &r);
    return;
  }
  if (static_schedule_forced()) {
    at::parallel_for(0, units, min_chunk, [&](int64_t b, int64_t e) {
      SingleRange r{b, e};
      g(single_range, &r);
    });
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0};
    int64_t units = 0, chunk = 1;
  } sh;
  sh.units = units;
  sh.chunk = std::max<int64_t>(std::max<int64_t>(1, min_chunk), units / (8 * threads));
  static constexpr RangeSource pull = [](void* c, int64_t* b, int64_t* e) {
    auto* s = static_cast<Shared*>(c);
    const int64_t u = s->next.fetch_add(s->chunk, std::memory_order_relaxed);
    if (u >= s->units) return false;
    *b = u, *e = std::min(s->units, u + s->chunk);
    return true;
  };
  const int64_t slots = std::min<int64_t>(threads, (units + sh.chunk - 1) / sh.chunk);
  at::parallel_for(0, slots, 1, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; ++s) g(pull, &sh);
  });
}

}  // namespace fastpose
