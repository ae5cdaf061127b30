// Dynamic scheduling over independent work units.
//
// at::parallel_for splits a range into one contiguous piece per thread before any thread starts, so
// the slowest thread sets the time. On the 2-vCPU VMs this library is measured on, one vCPU is often
// slower than the other by 20-40% for milliseconds at a time (another guest on the host core), and a
// statically split op then runs at the slow core's speed. Here each thread owns the contiguous piece
// the static split would give it and takes chunks from its front; a thread whose piece is done takes
// chunks from the back of another's, so a slow or late thread just does less of its own. Contiguous
// pieces matter: threads interleaving small chunks of one shared range (the earlier scheme) wrote
// their output rows next to each other's, and (1,64,64,64,64) took 69 us at 2 threads against 61 us
// split statically (the hardware prefetchers run each thread's stream into the other's rows).
// Units must be independent (any order, any thread). FASTPOSE_SCHEDULE=static restores the static
// split, =shared the single shared counter (read per call, for A/B measurements).
#pragma once
#include <ATen/Parallel.h>

#include "core/ranges.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace fastpose {

enum class Schedule { Owned, Static, Shared };

inline Schedule schedule_forced() {
  const char* e = std::getenv("FASTPOSE_SCHEDULE");
  if (e != nullptr && std::strcmp(e, "static") == 0) return Schedule::Static;
  if (e != nullptr && std::strcmp(e, "shared") == 0) return Schedule::Shared;
  return Schedule::Owned;
}

namespace detail {

// One thread's piece of the units: front and back offsets in one 64-bit word (front in the low half),
// so that the owner taking from the front and a thief taking from the back never hand out a unit twice.
struct alignas(64) OwnedPiece {
  std::atomic<uint64_t> fb{0};
};

struct OwnedPieces {
  OwnedPiece* piece;
  int64_t pieces, chunk;
};

struct OwnedCtx {
  OwnedPieces* all;
  int64_t home;
};

inline uint64_t pack_fb(uint64_t f, uint64_t b) { return f | (b << 32); }

// Up to `chunk` units off the front (the owner) or the back (a thief) of a piece.
inline bool take(OwnedPiece& pc, int64_t chunk, bool back, int64_t* begin, int64_t* end) {
  uint64_t v = pc.fb.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t f = v & 0xffffffffu, b = v >> 32;
    if (f >= b) return false;
    const uint64_t n = std::min<uint64_t>(b - f, chunk);
    if (pc.fb.compare_exchange_weak(v, back ? pack_fb(f, b - n) : pack_fb(f + n, b), std::memory_order_relaxed)) {
      *begin = static_cast<int64_t>(back ? b - n : f), *end = static_cast<int64_t>(back ? b : f + n);
      return true;
    }
  }
}

// The RangeSource of the owned schedule: the home piece's front, then the others' backs in turn.
inline bool pull_owned(void* c, int64_t* begin, int64_t* end) {
  auto* ctx = static_cast<OwnedCtx*>(c);
  OwnedPieces& a = *ctx->all;
  if (take(a.piece[ctx->home], a.chunk, false, begin, end)) return true;
  for (int64_t k = 1; k < a.pieces; ++k)
    if (take(a.piece[(ctx->home + k) % a.pieces], a.chunk, true, begin, end)) return true;
  return false;
}

}  // namespace detail

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
  Schedule mode = schedule_forced();
  if (mode == Schedule::Static) {
    at::parallel_for(0, units, min_chunk, [&](int64_t b, int64_t e) {
      SingleRange r{b, e};
      g(single_range, &r);
    });
    return;
  }
  const int64_t chunk = std::max<int64_t>(std::max<int64_t>(1, min_chunk), units / (8 * threads));
  // As many pieces as at::parallel_for would start threads for with this chunk as its grain.
  const int64_t slots = std::min<int64_t>(threads, (units + chunk - 1) / chunk);
  if (units >= (int64_t(1) << 32)) mode = Schedule::Shared;  // (offsets are 32-bit halves of a word)
  if (mode == Schedule::Owned) {
    std::vector<detail::OwnedPiece> piece(slots);
    for (int64_t s = 0; s < slots; ++s)
      piece[s].fb.store(detail::pack_fb(units * s / slots, units * (s + 1) / slots), std::memory_order_relaxed);
    detail::OwnedPieces all{piece.data(), slots, chunk};
    std::vector<detail::OwnedCtx> ctx(slots);
    for (int64_t s = 0; s < slots; ++s) ctx[s] = {&all, s};
    at::parallel_for(0, slots, 1, [&](int64_t b, int64_t e) {
      for (int64_t s = b; s < e; ++s) g(detail::pull_owned, &ctx[s]);
    });
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0};
    int64_t units = 0, chunk = 1;
  } sh;
  sh.units = units;
  sh.chunk = chunk;
  static constexpr RangeSource pull = [](void* c, int64_t* b, int64_t* e) {
    auto* s = static_cast<Shared*>(c);
    const int64_t u = s->next.fetch_add(s->chunk, std::memory_order_relaxed);
    if (u >= s->units) return false;
    *b = u, *e = std::min(s->units, u + s->chunk);
    return true;
  };
  at::parallel_for(0, slots, 1, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; ++s) g(pull, &sh);
  });
}

}  // namespace fastpose
