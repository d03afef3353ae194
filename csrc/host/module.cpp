// The Python module concrete_ext._C: loading it registers the CPU (and, when compiled, CUDA)
// kernels of every op (TORCH_LIBRARY_IMPL in register.cpp); its one function reports what was
// built. Only pybind11 here: the module needs nothing else from torch.
#include <pybind11/pybind11.h>

#include "concrete_ext/build_info.h"

#ifndef CE_VERSION
#define CE_VERSION "unknown"
#endif
#ifndef CE_TORCH_VERSION
#define CE_TORCH_VERSION "unknown"
#endif
#ifndef CE_CUDA_VERSION
#define CE_CUDA_VERSION ""
#endif
#ifndef CE_CUDA_ARCHS
#define CE_CUDA_ARCHS ""
#endif
#ifndef CE_BUILD_DATE
#define CE_BUILD_DATE ""
#endif

namespace {
pybind11::dict build_info() {
  pybind11::dict d;
  d["version"] = CE_VERSION;
  d["torch_version"] = CE_TORCH_VERSION;
  d["built"] = CE_BUILD_DATE;
#ifdef CE_WITH_CUDA
  d["cuda"] = true;
  d["cuda_version"] = CE_CUDA_VERSION;
  d["cuda_archs"] = CE_CUDA_ARCHS;
#else
  d["cuda"] = false;
  d["cuda_version"] = pybind11::none();
  d["cuda_archs"] = "";
#endif
  d["cpu"] = true;
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
  d["cpu_isa_clones"] = "x86-64-v4, x86-64-v3, baseline";
#else
  d["cpu_isa_clones"] = "baseline";
#endif
  return d;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "concrete_ext compiled kernels";
  m.def("build_info", &build_info, "What this build of concrete_ext._C contains.");
}
