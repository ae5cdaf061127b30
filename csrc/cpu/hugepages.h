// Fresh outputs of several MB are mostly page faults on these machines (a first touch of a 4 KiB
// page costs ~1.7 us on the VMs: 18 ms of a 33 MB output's 21 ms). Asking for transparent huge
// pages on the 2 MB-aligned interior before the kernel writes cuts that by ~5x where THP is in
// "madvise" mode. Harmless where THP is off or the memory was already touched.
// FASTPOSE_HUGEPAGES=0 turns it off.
#pragma once
#include <ATen/ATen.h>

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

}  // namespace fastpose
