// The opt-in caching CPU allocator (csrc/cpu/caching_allocator.cpp), driven from Python through
// fastpose._C (fastpose/cpu_allocator.py holds the public API).
#pragma once
#include <cstddef>
#include <cstdint>

namespace fastpose {

struct CachingAllocatorStats {
  bool enabled = false;           // process-wide caching (enable_cpu_caching_allocator)
  bool installed = false;         // c10's CPU allocator is this one (enabled, or an inference scope ran)
  size_t in_use_bytes = 0;       // blocks of this allocator currently held by tensors
  size_t peak_in_use_bytes = 0;
  size_t cached_bytes = 0;       // freed blocks kept for reuse
  int64_t hits = 0;              // allocations served from the cache
  int64_t misses = 0;            // allocations that took a fresh block
  size_t max_cached_bytes = 0;
  size_t min_block_bytes = 0;
};

void caching_allocator_enable(int64_t max_cached_bytes, int64_t min_block_bytes);
void caching_allocator_disable();
void caching_allocator_empty_cache();
CachingAllocatorStats caching_allocator_stats();
// Inference scopes (per thread, nesting): blocks the thread allocates inside one are cached even
// without enable; the first scope installs the allocator.
void caching_allocator_scope_enter();
void caching_allocator_scope_exit();
// Inference scopes on / off (off: they cache nothing; the cache is emptied unless enabled process-wide).
void caching_allocator_set_scopes(bool on);

}  // namespace fastpose
