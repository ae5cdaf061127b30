// The Python module fastpose._C: loading it registers every op with the dispatcher (the static
// initialisers of TORCH_LIBRARY / TORCH_LIBRARY_IMPL). pybind11 exposes only non-tensor helpers.
#include <torch/extension.h>

#include <chrono>

#include "core/isa.h"
#include "cpu/caching_allocator.h"
#include "core/xnor_conv.h"

namespace fastpose {
int xnor_alpha_sum_lanes();               // cpu/xnor_conv.cpp
void bind_replay(pybind11::module_& m);  // replay.cpp
}

#ifndef FASTPOSE_WITH_CUDA
#define FASTPOSE_WITH_CUDA 0
#endif

namespace {

pybind11::dict build_info() {
  namespace core = fastpose::core;
  pybind11::dict d;
  d["cuda"] = static_cast<bool>(FASTPOSE_WITH_CUDA);
  d["cpu_isa_detected"] = core::isa_name(core::detected_isa());
  d["cpu_isa_active"] = core::isa_name(core::active_isa());
  d["avx512_supported"] = core::isa_supported(core::Isa::Avx512);
  d["avx2_supported"] = core::isa_supported(core::Isa::Avx2);
  d["fast_pext"] = core::fast_pext();  // the AVX2 one-pass weight pack needs it
  return d;
}

// Binary MACs per second of the register-only xor + popcount + add loop of the active ISA (the
// XNOR convolution's limit on this core), best of `reps` runs of `iters` iterations, one thread.
double popcount_peak(int64_t iters, int reps) {
  namespace core = fastpose::core;
  const core::Isa isa = core::active_isa();
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t macs = core::xnor_popcount_peak_loop(iters, isa);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) best = std::max(best, macs / s);
  }
  return best;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastpose native extension";
  fastpose::bind_replay(m);
  m.def("build_info", &build_info, "Build configuration and the CPU instruction set in use.");
  m.def("cpu_isa", [] { return std::string(fastpose::core::isa_name(fastpose::core::active_isa())); },
        "The CPU instruction set kernels use now (honours FASTPOSE_ISA).");
  m.def("popcount_peak", &popcount_peak, pybind11::arg("iters") = 1000000, pybind11::arg("reps") = 20,
        "Binary MAC/s of a register-only xor+popcount+add loop on the active ISA (best of reps runs).");
  m.def("xnor_alpha_sum_lanes", [] {
    const bool avail = fastpose::core::pack_weight_abs_f32_available(9, fastpose::core::active_isa());
    return avail ? fastpose::xnor_alpha_sum_lanes() : 0;
  }, "Lanes of ATen's float sum that xnor_conv2d's one-pass alpha reproduces here (8 or 16), 0 if it uses ATen's mean.");
  // The caching CPU allocator (public API: fastpose/cpu_allocator.py).
  m.def("caching_allocator_enable", &fastpose::caching_allocator_enable, pybind11::arg("max_cached_bytes"),
        pybind11::arg("min_block_bytes"));
  m.def("caching_allocator_disable", &fastpose::caching_allocator_disable);
  m.def("caching_allocator_empty_cache", &fastpose::caching_allocator_empty_cache);
  m.def("caching_allocator_scope_enter", &fastpose::caching_allocator_scope_enter);
  m.def("caching_allocator_scope_exit", &fastpose::caching_allocator_scope_exit);
  m.def("caching_allocator_set_scopes", &fastpose::caching_allocator_set_scopes, pybind11::arg("on"));
  m.def("caching_allocator_stats", [] {
    const auto s = fastpose::caching_allocator_stats();
    pybind11::dict d;
    d["enabled"] = s.enabled;
    d["installed"] = s.installed;
    d["in_use_bytes"] = s.in_use_bytes;
    d["peak_in_use_bytes"] = s.peak_in_use_bytes;
    d["cached_bytes"] = s.cached_bytes;
    d["hits"] = s.hits;
    d["misses"] = s.misses;
    d["max_cached_bytes"] = s.max_cached_bytes;
    d["min_block_bytes"] = s.min_block_bytes;
    return d;
  });
}
