// The Python module fastpose._C: loading it registers every op with the dispatcher (the static
// initialisers of TORCH_LIBRARY / TORCH_LIBRARY_IMPL). pybind11 exposes only non-tensor helpers.
#include <torch/extension.h>

#include "core/isa.h"

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
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastpose native extension";
  m.def("build_info", &build_info, "Build configuration and the CPU instruction set in use.");
  m.def("cpu_isa", [] { return std::string(fastpose::core::isa_name(fastpose::core::active_isa())); },
        "The CPU instruction set kernels use now (honours FASTPOSE_ISA).");
}
