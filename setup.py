"""Builds the one extension, fastpose._C.

C++ sources of csrc/ are always compiled. CUDA sources (csrc/cuda/*.cu) are added only where CUDA can
be linked: the installed torch has CUDA, CUDA_HOME is found, and one of FORCE_CUDA=1, a visible GPU or
TORCH_CUDA_ARCH_LIST says to build for it. A CPU torch cannot link CUDA code; the .cu files are then
compile-checked by nvcc directly (tests/test_cuda_compile.py).

ISA-specific kernels (AVX2, AVX-512) select their instruction set per function with
__attribute__((target(...))) and are chosen at run time, so the whole library is compiled for the
baseline x86-64 and loads on any machine.

FASTPOSE_SANITIZE=1 builds with AddressSanitizer and UBSan (used by `make asan-test` on a copy of the tree).
"""
import glob
import os

from setuptools import find_packages, setup

import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))

# nvcc flags of every csrc/cuda/*.cu (also read by tools/nvcc_check.py: keep this a literal list).
# No --use_fast_math: it turns on flush-to-zero, under which negative subnormal inputs would pack as
# +1 and subnormal alpha / bias / outputs of the XNOR epilogue would be flushed (bit-exactness), and
# approximate division in softmax_dsnt. The kernels name their fast intrinsics (__expf, __logf)
# and their exact roundings (__fmul_rn, __fadd_rn) themselves.
NVCC_FLAGS = ["-O3", "-std=c++17", "-lineinfo", "-ftz=false", "-prec-div=true", "-prec-sqrt=true"]


def _want_cuda():
    if torch.version.cuda is None or cpp_extension.CUDA_HOME is None:
        return False
    if os.environ.get("FORCE_CUDA", "0") == "1" or os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return True
    return torch.cuda.is_available()


def _sources(*patterns):
    out = []
    for p in patterns:
        out += sorted(glob.glob(os.path.join("csrc", p)))
    return out


def extension():
    with_cuda = _want_cuda()
    sources = _sources("*.cpp", "core/*.cpp", "cpu/*.cpp", "autograd/*.cpp")
    # at::parallel_for is inline OpenMP in torch's headers: without -fopenmp it silently runs serially.
    cxx = ["-O3", "-std=c++17", "-fvisibility=hidden", "-fopenmp", "-DFASTPOSE_WITH_CUDA=%d" % int(with_cuda)]
    link = ["-fopenmp"]
    if os.environ.get("FASTPOSE_SANITIZE", "0") == "1":
        # `make asan-test`: AddressSanitizer + UBSan in the extension only (torch is not instrumented, so
        # libasan is LD_PRELOADed and leaks are not checked). vptr is off: torch's RTTI is not visible
        # to UBSan from an uninstrumented libtorch and would give false reports.
        san = ["-fsanitize=address,undefined", "-fno-sanitize=vptr", "-fno-sanitize-recover=undefined"]
        cxx += san + ["-O1", "-g", "-fno-omit-frame-pointer"]
        link += san
    kwargs = dict(
        name="fastpose._C",
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx},
        extra_link_args=link,
    )
    if with_cuda:
        sources += _sources("cuda/*.cpp", "cuda/*.cu")
        kwargs["extra_compile_args"]["nvcc"] = NVCC_FLAGS + ["-DFASTPOSE_WITH_CUDA=1"]
        return cpp_extension.CUDAExtension(sources=sources, **kwargs)
    return cpp_extension.CppExtension(sources=sources, **kwargs)


setup(
    packages=find_packages(include=["fastpose", "fastpose.*"]) + ["fastpose.triton_kernels"],
    package_dir={"fastpose.triton_kernels": "triton_kernels"},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
