// An opt-in caching allocator for CPU tensors (fastpose.enable_cpu_caching_allocator).
//
// Why: glibc serves blocks above its mmap threshold (128 KiB, raised dynamically up to 32 MiB) with
// a fresh mmap, or trims the top of its heap after a large free, so the activations of an inference or
// training step are often new pages every step: a minor fault (and a zeroing) per 4 KiB page. On the
// shared VMs measured that was 2000-9000 faults per forward of the packed binary HPM model, and at
// 2 threads the faults (serialised in the kernel) made the forward 1.6x slower than with the blocks
// reused. Here freed blocks of min_block bytes and more are kept in per-size-class free lists and
// handed out again; smaller ones go to the allocator that was installed before (c10's default).
//
// Size classes: n rounded up to a multiple of 2^floor(log2 n) / 8 (at most 12.5% padding, at least
// 4 KiB). Blocks of 4 MiB and more are 2 MiB aligned (so transparent huge pages can back them), and
// advised as huge pages by the rule all fastpose outputs share (cpu/hugepages.h: 8 MiB and more,
// FASTPOSE_HUGEPAGES=0 turns it off); smaller blocks are 64 B aligned like c10's. A freed block is cached,
// making room by freeing the cached blocks of the least recently used other size classes when the cache
// would pass max_cached bytes (a block larger than that goes back to the system).
//
// Inference scopes (fastpose.cpu_allocator.inference_scope, taken by the packed binary HPM forward):
// without the process-wide opt-in, the allocator is installed but caches only blocks allocated by a
// thread inside a scope; everything else goes straight to the previous allocator. That is the arena
// an inference runtime keeps for its activations (onnxruntime's CPU arena is on by default), scoped
// to fastpose's own inference path.
#include <torch/extension.h>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#endif

#include "cpu/caching_allocator.h"
#include "cpu/hugepages.h"

namespace fastpose {
namespace {

constexpr size_t kHuge = size_t(1) << 21;

// Inference scopes this thread is inside (scope_enter / scope_exit nest).
thread_local int tls_scope_depth = 0;

size_t size_class(size_t n) {
  size_t top = size_t(1) << (63 - __builtin_clzll(static_cast<unsigned long long>(n)));
  size_t g = std::max<size_t>(top / 8, 4096);
  return (n + g - 1) / g * g;
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    // Read without the lock (every allocation passes here): enable() publishes them atomically.
    c10::Allocator* fb = fallback_.load(std::memory_order_acquire);
    if (n < min_block_.load(std::memory_order_relaxed) || fb == nullptr ||
        !(global_.load(std::memory_order_relaxed) ||
          (tls_scope_depth > 0 && scopes_on_.load(std::memory_order_relaxed)))) {
      if (fb == nullptr) fb = c10::GetDefaultCPUAllocator();
      return fb->allocate(n);
    }
    const size_t cls = size_class(n);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> g(mu_);
      auto it = free_.find(cls);
      if (it != free_.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
        cached_ -= cls;
        ++hits_;
      } else {
        ++misses_;
      }
      last_use_[cls] = ++tick_;
    }
    if (p == nullptr) p = fresh(cls);
    {
      std::lock_guard<std::mutex> g(mu_);
      live_[p] = cls;
      in_use_ += cls;
      peak_in_use_ = std::max(peak_in_use_, in_use_);
      c10::profiledCPUMemoryReporter().New(p, cls);
    }
    return {p, p, &deleter, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &deleter; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  static void deleter(void* p) { instance().release(p); }

  static CachingCpuAllocator& instance() {
    // Never destroyed: tensors may be freed during interpreter teardown, after static destructors.
    static CachingCpuAllocator* a = [] {
      auto* x = new CachingCpuAllocator();
#if defined(__linux__)
      // A fork while another thread holds the lock (DataLoader workers) must not leave it locked.
      pthread_atfork([] { instance().mu_.lock(); }, [] { instance().mu_.unlock(); },
                     [] { instance().mu_.unlock(); });
#endif
      return x;
    }();
    return *a;
  }

  // Process-wide caching: installs this allocator as c10's CPU allocator (or changes its limits).
  void enable(size_t max_cached, size_t min_block) {
    std::lock_guard<std::mutex> g(mu_);
    install_locked(true);  // throws (nothing changed) under a higher-priority allocator
    max_cached_ = max_cached;
    min_block_.store(std::max<size_t>(min_block, 1), std::memory_order_relaxed);
    global_.store(true, std::memory_order_relaxed);
    trim_locked(max_cached_);
  }

  // Restores the allocator that was installed before (unless another one replaced this one since).
  // Blocks handed out stay valid: they come back here when freed and are then returned to the system.
  // A later inference scope installs it again.
  void disable() {
    std::lock_guard<std::mutex> g(mu_);
    global_.store(false, std::memory_order_relaxed);
    if (installed_) {
      c10::Allocator* fb = fallback_.load(std::memory_order_acquire);
      if (c10::GetCPUAllocator() == this) c10::SetCPUAllocator(fb ? fb : c10::GetDefaultCPUAllocator(), kPriority);
      installed_ = false;
    }
    blocked_ = false;
    installed_flag_.store(false, std::memory_order_release);
    trim_locked(0);
    // Later scopes run with their defaults, not the limits of the process-wide form.
    max_cached_ = kScopeMaxCached;
    min_block_.store(kScopeMinBlock, std::memory_order_relaxed);
  }

  // Inference scopes: the first one installs the allocator (limits as last set, by default 512 MiB
  // cached and 256 KiB blocks). Where another allocator with a higher priority is installed, or scopes
  // are switched off (set_scopes), scopes do nothing; the depth is counted either way, so that
  // enter / exit stay paired.
  void scope_enter() {
    if (scopes_on_.load(std::memory_order_relaxed) && !installed_flag_.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> g(mu_);
      install_locked(false);
    }
    ++tls_scope_depth;
  }
  static void scope_exit() {
    if (tls_scope_depth > 0) --tls_scope_depth;
  }

  // Off: scopes cache nothing and, unless process-wide caching is on, the cache is emptied and freed
  // blocks are no longer kept.
  void set_scopes(bool on) {
    std::lock_guard<std::mutex> g(mu_);
    scopes_on_.store(on, std::memory_order_relaxed);
    if (!on && !global_.load(std::memory_order_relaxed)) trim_locked(0);
  }

  void empty_cache() {
    std::lock_guard<std::mutex> g(mu_);
    trim_locked(0);
  }

  CachingAllocatorStats stats() {
    std::lock_guard<std::mutex> g(mu_);
    CachingAllocatorStats s;
    s.enabled = global_.load(std::memory_order_relaxed);
    s.installed = installed_;
    s.in_use_bytes = in_use_;
    s.peak_in_use_bytes = peak_in_use_;
    s.cached_bytes = cached_;
    s.hits = hits_;
    s.misses = misses_;
    s.max_cached_bytes = max_cached_;
    s.min_block_bytes = min_block_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  // c10's default registration's priority: installing over it works, and whatever is installed later the
  // usual way (priority 0) still replaces this allocator.
  static constexpr uint8_t kPriority = 0;
  static constexpr size_t kScopeMaxCached = size_t(512) << 20, kScopeMinBlock = size_t(256) << 10;

  // strict (enable()): a higher-priority allocator is an error; for scopes it only means no caching
  // (and no further attempts until enable() or disable()).
  void install_locked(bool strict) {
    if (installed_ || (blocked_ && !strict)) return;
    c10::Allocator* cur = c10::GetCPUAllocator();
    if (cur != this) fallback_.store(cur, std::memory_order_release);
    c10::SetCPUAllocator(this, kPriority);  // a no-op under a higher priority
    blocked_ = c10::GetCPUAllocator() != this;
    installed_ = !blocked_;
    installed_flag_.store(true, std::memory_order_release);
    TORCH_CHECK(!(strict && blocked_),
                "enable_cpu_caching_allocator: another CPU allocator with a higher priority is installed");
  }

  void* fresh(size_t cls) {
    const size_t align = cls >= 2 * kHuge ? kHuge : 64;
    void* p = nullptr;
    if (posix_memalign(&p, align, cls) != 0 || p == nullptr) {
      empty_cache();  // the cached blocks may be what is missing
      p = nullptr;
      if (posix_memalign(&p, align, cls) != 0 || p == nullptr)
        TORCH_CHECK_WITH(OutOfMemoryError, false, "fastpose CPU caching allocator: out of memory allocating ", cls,
                         " bytes");
    }
    if (align == kHuge) advise_hugepages(p, cls);
    return p;
  }

  void release(void* p) {
    if (p == nullptr) return;
    bool ours = false, keep = false;
    {
      std::lock_guard<std::mutex> g(mu_);
      auto it = live_.find(p);
      if (it != live_.end()) {
        ours = true;
        const size_t cls = it->second;
        live_.erase(it);
        in_use_ -= cls;
        // The profiler's record goes before the block can be handed out again by another thread.
        c10::profiledCPUMemoryReporter().Delete(p);
        if (installed_ && (global_.load(std::memory_order_relaxed) || scopes_on_.load(std::memory_order_relaxed)) &&
            cls <= max_cached_) {
          last_use_[cls] = ++tick_;
          trim_locked(max_cached_ - cls, cls);
          if (cached_ + cls <= max_cached_) {
            free_[cls].push_back(p);
            cached_ += cls;
            keep = true;
          }
        }
      }
    }
    if (ours) {
      if (!keep) std::free(p);
      return;
    }
    // Not ours: a small block of the previous allocator, or one allocated before this one was installed,
    // freed through raw_deallocate (which asks the current allocator for its deleter).
    c10::Allocator* fb = fallback_.load(std::memory_order_acquire);
    if (fb == nullptr) fb = c10::GetDefaultCPUAllocator();
    c10::DeleterFnPtr d = fb->raw_deleter();
    TORCH_INTERNAL_ASSERT(d != nullptr, "fastpose CPU caching allocator: free of a block it cannot return");
    d(p);
  }

  // Frees cached blocks, least recently used size classes first (sizes a program stopped using, e.g.
  // other input shapes, give way to current ones), and never of class `keep`, until at most `limit`
  // bytes stay cached. Size classes are >= 4 KiB, so keep = 0 spares none.
  void trim_locked(size_t limit, size_t keep = 0) {
    while (cached_ > limit) {
      size_t victim = 0;
      int64_t oldest = INT64_MAX;
      for (auto& kv : free_) {
        if (kv.first == keep || kv.second.empty()) continue;
        const auto it = last_use_.find(kv.first);
        const int64_t t = it == last_use_.end() ? 0 : it->second;
        if (t < oldest) oldest = t, victim = kv.first;
      }
      if (victim == 0) return;
      auto& fl = free_[victim];
      while (cached_ > limit && !fl.empty()) {
        std::free(fl.back());
        fl.pop_back();
        cached_ -= victim;
      }
    }
  }

  std::mutex mu_;
  bool installed_ = false;  // c10's CPU allocator is this one
  bool blocked_ = false;    // a higher-priority allocator refused the installation
  std::atomic<bool> installed_flag_{false};  // installed_ or blocked_, read without the lock by scope_enter
  std::atomic<bool> global_{false};          // enable(): every thread's blocks are cached
  std::atomic<bool> scopes_on_{true};        // inference scopes cache (set_scopes)
  std::atomic<c10::Allocator*> fallback_{nullptr};
  std::atomic<size_t> min_block_{kScopeMinBlock};
  size_t max_cached_ = kScopeMaxCached;  // enable()'s default (Python) is 2 GiB
  int64_t tick_ = 0;
  std::unordered_map<size_t, int64_t> last_use_;  // size class -> tick of its last allocation or free
  size_t in_use_ = 0, peak_in_use_ = 0, cached_ = 0;
  int64_t hits_ = 0, misses_ = 0;
  std::unordered_map<size_t, std::vector<void*>> free_;
  std::unordered_map<void*, size_t> live_;
};

}  // namespace

void caching_allocator_enable(int64_t max_cached_bytes, int64_t min_block_bytes) {
  TORCH_CHECK_VALUE(max_cached_bytes >= 0, "enable_cpu_caching_allocator: max_cached_bytes must be >= 0, got ",
                    max_cached_bytes);
  TORCH_CHECK_VALUE(min_block_bytes >= 1, "enable_cpu_caching_allocator: min_block_bytes must be >= 1, got ",
                    min_block_bytes);
  CachingCpuAllocator::instance().enable(static_cast<size_t>(max_cached_bytes), static_cast<size_t>(min_block_bytes));
}

void caching_allocator_disable() { CachingCpuAllocator::instance().disable(); }

void caching_allocator_empty_cache() { CachingCpuAllocator::instance().empty_cache(); }

CachingAllocatorStats caching_allocator_stats() { return CachingCpuAllocator::instance().stats(); }

void caching_allocator_scope_enter() { CachingCpuAllocator::instance().scope_enter(); }

void caching_allocator_scope_exit() { CachingCpuAllocator::scope_exit(); }

void caching_allocator_set_scopes(bool on) { CachingCpuAllocator::instance().set_scopes(on); }

}  // namespace fastpose
