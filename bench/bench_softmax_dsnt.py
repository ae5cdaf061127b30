"""softmax_dsnt forward and forward+backward: fastpose against the PyTorch eager reference and
torch.compile of it, CPU (1 thread and all threads) and CUDA.

Every implementation allocates its outputs on each call (what a training step does); the input
gradient is dropped between calls so that no accumulation pass is timed.

CPU instruction sets: the fastpose kernels run on the ISA that FASTPOSE_ISA selects (default: the best
the core has); on an AVX-512 machine the float32 cases are run a second time with the AVX2 kernels
(op "... [avx2]", its own eager and compile runs in the same session, so each table's ratios come
from one run). Eager and torch.compile use torch's own CPU capability either way
(``torch.backends.cpu.get_cpu_capability()``; ATEN_CPU_CAPABILITY=avx2 restricts it, as on an
AVX2-only machine).
"""
import contextlib
import os

import pytest
import torch

import fastpose
from fastpose.ops.softmax_dsnt import softmax_dsnt, softmax_dsnt_reference

from _common import CPU_THREADS, num_threads, rotation, run, tag

CUDA = torch.cuda.is_available()
# (1024, 17, 64, 48) is GPU-only: 214 MB of logits take eager and torch.compile seconds per call here.
SHAPES_CPU = [(32, 16, 64, 64), (64, 17, 64, 48), (256, 17, 64, 48), (1, 68, 64, 64)]
SHAPES_CPU_SECOND_ISA = [(32, 16, 64, 64), (64, 17, 64, 48), (1, 68, 64, 64)]
SHAPES_CUDA = [(32, 16, 64, 64), (256, 17, 64, 48), (1024, 17, 64, 48), (1, 68, 64, 64)]
DTYPES = [torch.float32, torch.float16]
QUICK_CUDA = {((1024, 17, 64, 48), torch.float32)}  # make gpu-check: the bandwidth target


def _second_isa():
    """avx2 when the active CPU ISA is avx512 (the AVX2 kernels also run there), else None."""
    info = fastpose.build_info()
    return "avx2" if info.get("cpu_isa_active") == "avx512" and info.get("avx2_supported") else None


_compiled = {}


def _impl(name):
    if name == "fastpose":
        return softmax_dsnt
    if name == "eager":
        return softmax_dsnt_reference
    if name not in _compiled:
        _compiled[name] = torch.compile(softmax_dsnt_reference, dynamic=False)
    return _compiled[name]


@contextlib.contextmanager
def _isa(isa):
    """FASTPOSE_ISA for the kernels (read on every call) while the benchmark runs."""
    if isa is None:
        yield
        return
    old = os.environ.get("FASTPOSE_ISA")
    os.environ["FASTPOSE_ISA"] = isa
    try:
        yield
    finally:
        if old is None:
            del os.environ["FASTPOSE_ISA"]
        else:
            os.environ["FASTPOSE_ISA"] = old


def _cases(device):
    shapes = SHAPES_CUDA if device == "cuda" else SHAPES_CPU
    threads = [None] if device == "cuda" else CPU_THREADS
    marks = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs CUDA")] if device == "cuda" else []
    out = []
    isas = [None] + ([_second_isa()] if device == "cpu" and _second_isa() else [])
    for isa in isas:
        for shape in (shapes if isa is None else SHAPES_CPU_SECOND_ISA):
            for dtype in (DTYPES if isa is None else [torch.float32]):
                m = marks + [pytest.mark.gpu_quick] if device == "cuda" and (shape, dtype) in QUICK_CUDA else marks
                if device == "cpu" and dtype == torch.float16 and shape[0] > 32:
                    continue  # float16 on the CPU: one shape is enough to report
                for t in threads:
                    for impl in ("fastpose", "eager", "compile"):
                        sfx = f"-{isa}" if isa else ""
                        out.append(pytest.param(device, shape, dtype, t, impl, isa, marks=m,
                                                id=f"{device}-{'x'.join(map(str, shape))}-{str(dtype)[6:]}-t{t}-{impl}{sfx}"))
    return out


CASES = _cases("cpu") + _cases("cuda")


def _bench(benchmark, device, shape, dtype, threads, impl, isa, backward):
    fn = _impl(impl)
    x = torch.randn(shape, device=device).mul_(3).to(dtype)
    B, J, H, W = shape
    nbytes = x.numel() * x.element_size()
    op = "softmax_dsnt" + ("_fwd_bwd" if backward else "_fwd") + (f" [{isa}]" if isa else "")
    tag(benchmark, op=op, impl=impl, case=shape, dtype=dtype, device=device, threads=threads,
        bytes=nbytes * (3 if backward else 1))  # fwd: logits once; fwd+bwd: logits twice + grad once
    if backward:
        x.requires_grad_()
        g = torch.randn(B, J, 2, device=device, dtype=dtype)

        def step():
            x.grad = None
            fn(x).backward(g)
    else:
        def step():
            return fn(x)
    rounds = 5 if (device == "cpu" and x.numel() > 3_000_000) else None
    if device == "cpu":
        with _isa(isa if impl == "fastpose" else None), num_threads(threads):
            run(benchmark, step, device, rounds=rounds)
    else:
        # Rotated logits (with their own grads) past the L2; step's x is the first set.
        def make():
            t = torch.randn(shape, device=device).mul_(3).to(dtype)
            return t.requires_grad_() if backward else t

        def step_on(xi):
            if backward:
                xi.grad = None
                fn(xi).backward(g)
            else:
                fn(xi)
        run(benchmark, step_on, device, sets=[x] + rotation(make, nbytes, device)[1:])


@pytest.mark.parametrize("device,shape,dtype,threads,impl,isa", CASES)
def test_softmax_dsnt_fwd(benchmark, device, shape, dtype, threads, impl, isa):
    _bench(benchmark, device, shape, dtype, threads, impl, isa, backward=False)


@pytest.mark.parametrize("device,shape,dtype,threads,impl,isa", CASES)
def test_softmax_dsnt_fwd_bwd(benchmark, device, shape, dtype, threads, impl, isa):
    _bench(benchmark, device, shape, dtype, threads, impl, isa, backward=True)
