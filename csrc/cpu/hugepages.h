// Fresh outputs of several MB are mostly page faults on these machines (a first touch of a 4 KiB
// page costs ~1.7 us on the VMs: 18 ms of a 33 MB output's 21 ms). Asking for transparent huge
// pages on the 2 MB-aligned interior before the kernel writes cuts that by ~5x where THP is in
// "madvise" mode. Harmless where THP is off or the memory was already touched.
// FASTPOSE_HUGEPAGES=0 turns it off.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fastpose {

inline bool hugepages_enabled() {
  static const bool enabled = [] {
    const char* e = std::getenv("FASTPOSE_HUGEPAGES");
    return e == nullptr || std::strcmp(e, "0") != 0;
  }();
  return enabled;
}

// Advises the 2 MB-aligned interior of [p, p + bytes) as transparent huge pages, for blocks of 8 MB and more.
inline void advise_hugepages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  if (bytes < 4 * kHuge || !hugepages_enabled()) return;
  const uintptr_t b = reinterpret_cast<uintptr_t>(p);
  const uintptr_t a = (b + kHuge - 1) & ~(kHuge - 1), e = (b + bytes) & ~(kHuge - 1);
  if (e > a) madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);  // advice only: errors ignored
#else
  (void)p, (void)bytes;
#endif
}

inline void advise_hugepages(const at::Tensor& t) {
  if (t.is_cpu()) advise_hugepages(t.data_ptr(), t.numel() * t.element_size());
}

// Non-temporal stores for outputs from 4 MiB (twice a core's L2 on the machines measured): such an output
// is out of L2 before its consumer reads it anyway, and a plain store first reads every line for
// ownership (on the shared VMs 2-4x the time of a streaming store). Below, the output is better left in
// cache for the next op. FASTPOSE_STREAM_STORES=0 / 1 forces off / on (read per call, like FASTPOSE_ISA).
inline bool stream_stores(int64_t bytes) {
  const char* e = std::getenv("FASTPOSE_STREAM_STORES");
  if (e == nullptr || *e == '\0') return bytes >= (int64_t(4) << 20);
  return std::strcmp(e, "0") != 0;
}

// Bytes of the rows t is interleaved with: max over dims of size * stride (numel for a contiguous
// tensor; a channel slice of a larger tensor counts its parent, whose lines its stores touch).
inline int64_t span_bytes(const at::Tensor& t) {
  if (t.numel() == 0) return 0;
  int64_t span = 1;
  for (int64_t d = 0; d < t.dim(); ++d) span = std::max<int64_t>(span, t.size(d) * t.stride(d));
  return span * t.element_size();
}

}  // namespace fastpose
