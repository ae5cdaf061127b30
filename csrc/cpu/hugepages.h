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

inline void advise_hugepages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const size_t bytes = t.numel() * t.element_size();
  if (bytes < 4 * kHuge || !t.is_cpu()) return;
  static const bool enabled = [] {
    const char* e = std::getenv("FASTPOSE_HUGEPAGES");
    return e == nullptr || std::strcmp(e, "0") != 0;
  }();
  if (!enabled) return;
  const uintptr_t p = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t a = (p + kHuge - 1) & ~(kHuge - 1), e = (p + bytes) & ~(kHuge - 1);
  if (e > a) madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);  // advice only: errors ignored
#else
  (void)t;
#endif
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
