"""xnor_conv2d (3x3, pad 1, alpha scale) against float convolution.

CPU (1 and 2 threads): fastpose from a float32 input (packing included) and from a packed input, on the
best ISA and (where the CPU has AVX-512) forced to AVX2, against F.conv2d float32 NCHW ("eager",
oneDNN), F.conv2d channels_last, and the emulated binary convolution (sign, then F.conv2d). Every row
carries the machine's xor+popcount+add limit measured in this run (`fastpose._C.popcount_peak`, one
thread, times the thread count) and, at one thread, Larq Compute Engine's best x86 time from
../shared/docs/anchors.md (measured on a Zen 5 AVX-512 machine, not here; a reference column only).
CUDA (N = 32): fastpose from float16 channels_last and from packed input, against cuDNN float16
channels_last. Outputs are allocated by every call for every implementation.
macs = N * Cout * Hout * Wout * Cin * 9 (binary MACs for fastpose, float MACs for the baselines).
"""
import contextlib
import os

import pytest
import torch
import torch.nn.functional as F

import fastpose
from fastpose.ops import binarize, binarize_pack, xnor_alpha, xnor_conv2d

from _common import CPU_THREADS, interleaved, num_threads, rotation, run, tag, thread_scaling

CUDA = torch.cuda.is_available()
# (N, Cin, Cout, H, W)
SHAPES = [(1, 256, 128, 64, 64), (1, 128, 64, 64, 64), (1, 64, 64, 64, 64), (8, 256, 128, 64, 64),
          (1, 256, 256, 32, 32), (1, 128, 128, 16, 16)]
# Larq Compute Engine 0.16 best ms (anchors.md, "Binary convolution peers on x86"; 1 thread); the
# (8,...) entry is the low end of its 87-94 ms range.
LCE_MS = {(1, 256, 128, 64, 64): 10.8, (1, 128, 64, 64, 64): 2.9, (1, 64, 64, 64, 64): 1.66,
          (8, 256, 128, 64, 64): 87.0, (1, 256, 256, 32, 32): 5.1, (1, 128, 128, 16, 16): 0.34}
_INFO = fastpose.build_info()
AVX2_TOO = _INFO["avx512_supported"] and _INFO["avx2_supported"]
CPU_IMPLS = ["fastpose", "fastpose_packed"] + (["fastpose_avx2", "fastpose_packed_avx2"] if AVX2_TOO else []) + [
    "eager", "eager_channels_last", "emulated_sign_conv"]
CUDA_IMPLS = ["fastpose", "fastpose_packed", "cudnn_fp16_channels_last"]
_PEAK = {}


def popcount_peak(isa=None):
    """Binary MAC/s of one core's register-only xor+popcount+add loop on `isa` (default: the active one)."""
    key = isa or "auto"
    if key not in _PEAK:
        with _isa(isa):
            _PEAK[key] = fastpose._C.popcount_peak(1000000, 20)
    return _PEAK[key]


@contextlib.contextmanager
def _isa(name):
    old = os.environ.get("FASTPOSE_ISA")
    if name:
        os.environ["FASTPOSE_ISA"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FASTPOSE_ISA", None)
        else:
            os.environ["FASTPOSE_ISA"] = old


def _cases():
    out = []
    cuda_seen = set()
    for shape in SHAPES:
        for t in CPU_THREADS:
            for impl in CPU_IMPLS:
                out.append(pytest.param("cpu", shape, t, impl, id=f"cpu-{'x'.join(map(str, shape))}-t{t}-{impl}"))
        cshape = (32,) + shape[1:]
        if cshape in cuda_seen:  # (1, ...) and (8, ...) of one layer are one CUDA case at N = 32
            continue
        cuda_seen.add(cshape)
        marks = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs CUDA")]
        if cshape == (32, 256, 128, 64, 64):
            marks.append(pytest.mark.gpu_quick)  # make gpu-check: the target shape
        for impl in CUDA_IMPLS:
            out.append(pytest.param("cuda", cshape, None, impl, id=f"cuda-{'x'.join(map(str, cshape))}-{impl}",
                                    marks=marks))
    return out


def _with_isa(fn, isa):
    def f():
        with _isa(isa):
            return fn()
    return f


def _fn(device, impl, x, w):
    if impl.endswith("_avx2"):
        return _with_isa(_fn(device, impl[: -len("_avx2")], x, w), "avx2")
    if impl == "fastpose":
        xin = x.half().contiguous(memory_format=torch.channels_last) if device == "cuda" else x
        return lambda: xnor_conv2d(xin, w, None, 1, 1)
    if impl == "fastpose_packed":
        xp, wp, a = binarize_pack(x), binarize_pack(w), xnor_alpha(w)
        cin = w.shape[1]
        return lambda: torch.ops.fastpose.xnor_conv2d_packed(xp, wp, a, None, cin, [1, 1], [1, 1], [1, 1], 0)
    if impl == "eager":
        return lambda: F.conv2d(x, w, padding=1)
    if impl == "eager_channels_last":
        xc, wc = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
        return lambda: F.conv2d(xc, wc, padding=1)
    if impl == "emulated_sign_conv":
        a = xnor_alpha(w).view(1, -1, 1, 1)
        return lambda: F.conv2d(binarize(x), binarize(w), padding=1) * a
    if impl == "cudnn_fp16_channels_last":
        xc = x.half().contiguous(memory_format=torch.channels_last)
        wc = w.half().contiguous(memory_format=torch.channels_last)
        return lambda: F.conv2d(xc, wc, padding=1)
    raise ValueError(impl)


@pytest.mark.parametrize("device,shape,threads,impl", _cases())
def test_xnor_conv2d(benchmark, device, shape, threads, impl):
    N, Cin, Cout, H, W = shape
    x = torch.randn(N, Cin, H, W, device=device)
    w = torch.randn(Cout, Cin, 3, 3, device=device)
    fn = _fn(device, impl, x, w)
    dtype = torch.float16 if device == "cuda" else torch.float32
    extra = {}
    if device == "cpu":
        # The limit of the fastpose rows: one core's peak times the threads (the peak of the ISA the
        # row runs on; the float baselines' rows carry it too, unused).
        isa = "avx2" if impl.endswith("_avx2") else None
        extra["peak_macs_per_s"] = popcount_peak(isa) * threads
        if threads == 1:
            extra["ref_ms"] = {"LCE best (anchors.md)": LCE_MS[shape]}
    tag(benchmark, op="xnor_conv2d_3x3", impl=impl, case=shape, dtype=dtype, device=device, threads=threads,
        macs=N * Cout * H * W * Cin * 9)
    benchmark.extra_info.update(extra)
    if device == "cpu":
        with num_threads(threads):
            big = N * Cout * H * W * Cin > 2e8
            run(benchmark, fn, device, rounds=5 if big and not impl.startswith("fastpose") else None)
    else:
        # Rotated inputs past the L2 (the weights are small and stay in it, as in a network).
        def make():
            return _fn(device, impl, torch.randn(N, Cin, H, W, device=device), w)
        nbytes = N * Cin * H * W * (2 if impl != "fastpose_packed" else 1 / 8)
        run(benchmark, lambda f: f(), device, sets=[fn] + rotation(make, nbytes, device)[1:])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
@pytest.mark.parametrize("impl", ["fastpose", "fastpose_packed"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_xnor_conv2d_thread_scaling(benchmark, shape, impl):
    """The 2-thread speed-up of the CPU kernels, 1 and 2 threads timed in alternating rounds."""
    N, Cin, Cout, H, W = shape
    fn = _fn("cpu", impl, torch.randn(N, Cin, H, W), torch.randn(Cout, Cin, 3, 3))
    tag(benchmark, op="xnor_conv2d_3x3", impl=impl, case=shape, dtype=torch.float32, device="cpu", threads=2,
        macs=N * Cout * H * W * Cin * 9)
    thread_scaling(benchmark, fn, (1, 2))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_xnor_conv2d_vs_onednn_interleaved(benchmark, shape):
    """1 thread: fastpose from a float and from a packed input against oneDNN float32 NCHW, in alternating
    rounds (the targets' ratios, free of the host's drift between rows)."""
    N, Cin, Cout, H, W = shape
    x, w = torch.randn(N, Cin, H, W), torch.randn(Cout, Cin, 3, 3)
    tag(benchmark, op="xnor_conv2d_3x3", impl="interleaved", case=shape, dtype=torch.float32, device="cpu",
        threads=1, macs=N * Cout * H * W * Cin * 9)
    interleaved(benchmark, [(impl, _fn("cpu", impl, x, w), 1) for impl in ("eager", "fastpose", "fastpose_packed")],
                rounds=40 if N * Cin * Cout * H * W > 2e8 else 100)
