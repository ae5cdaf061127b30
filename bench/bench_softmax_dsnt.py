"""softmax_dsnt forward and forward+backward: fastpose against the PyTorch eager reference and
torch.compile of it, CPU (1 thread and all threads) and CUDA.

Every implementation allocates its outputs on each call (what a training step does); the input
gradient is dropped between calls so that no accumulation pass is timed.
"""
import pytest
import torch

from fastpose.ops.softmax_dsnt import softmax_dsnt, softmax_dsnt_reference

from _common import CPU_THREADS, num_threads, rotation, run, tag

CUDA = torch.cuda.is_available()
# (1024, 17, 64, 48) is GPU-only: 214 MB of logits take eager and torch.compile seconds per call here.
SHAPES_CPU = [(32, 16, 64, 64), (64, 17, 64, 48), (256, 17, 64, 48), (1, 68, 64, 64)]
SHAPES_CUDA = [(32, 16, 64, 64), (256, 17, 64, 48), (1024, 17, 64, 48), (1, 68, 64, 64)]
DTYPES = [torch.float32, torch.float16]
QUICK_CUDA = {((1024, 17, 64, 48), torch.float32)}  # make gpu-check: the bandwidth target

_compiled = {}


def _impl(name):
    if name == "fastpose":
        return softmax_dsnt
    if name == "eager":
        return softmax_dsnt_reference
    if name not in _compiled:
        _compiled[name] = torch.compile(softmax_dsnt_reference, dynamic=False)
    return _compiled[name]


def _cases(device):
    shapes = SHAPES_CUDA if device == "cuda" else SHAPES_CPU
    threads = [None] if device == "cuda" else CPU_THREADS
    marks = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs CUDA")] if device == "cuda" else []
    out = []
    for shape in shapes:
        for dtype in DTYPES:
            m = marks + [pytest.mark.gpu_quick] if device == "cuda" and (shape, dtype) in QUICK_CUDA else marks
            if device == "cpu" and dtype == torch.float16 and shape[0] > 32:
                continue  # float16 on the CPU: one shape is enough to report
            for t in threads:
                for impl in ("fastpose", "eager", "compile"):
                    out.append(pytest.param(device, shape, dtype, t, impl, marks=m,
                                            id=f"{device}-{'x'.join(map(str, shape))}-{str(dtype)[6:]}-t{t}-{impl}"))
    return out


CASES = _cases("cpu") + _cases("cuda")


def _bench(benchmark, device, shape, dtype, threads, impl, backward):
    fn = _impl(impl)
    x = torch.randn(shape, device=device).mul_(3).to(dtype)
    B, J, H, W = shape
    nbytes = x.numel() * x.element_size()
    tag(benchmark, op="softmax_dsnt" + ("_fwd_bwd" if backward else "_fwd"), impl=impl, case=shape,
        dtype=dtype, device=device, threads=threads,
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
        with num_threads(threads):
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


@pytest.mark.parametrize("device,shape,dtype,threads,impl", CASES)
def test_softmax_dsnt_fwd(benchmark, device, shape, dtype, threads, impl):
    _bench(benchmark, device, shape, dtype, threads, impl, backward=False)


@pytest.mark.parametrize("device,shape,dtype,threads,impl", CASES)
def test_softmax_dsnt_fwd_bwd(benchmark, device, shape, dtype, threads, impl):
    _bench(benchmark, device, shape, dtype, threads, impl, backward=True)
