"""End-to-end inference of every model: the fastpose backend against the torch backend (same modules,
same weights; impl "eager" in the report), plus torch.compile of the torch backend on CUDA.

CPU: batch 1, float32, 1 thread and all threads, few rounds (the big models take seconds per image).
The binary model's fastpose case runs the packed model (``fastpose.nn.pack``: 1-bit weights, the
inference form); "fastpose_unpacked" is the trainable XNORConv2d form (packs its weights every call).
CUDA (marked `cuda`): float32 and float16 channels_last at batch 1 and 32, CUDA graphs at batch 1,
torch.compile at float16 batch 32. Images per second = batch / median time.
`macs` is the conv multiply-accumulate count at that input (batch included).
"""
import os

import pytest
import torch

import fastpose.nn as fnn
from fastpose import models

from _common import CPU_THREADS, num_threads, run, tag

CUDA = torch.cuda.is_available()
CUDA_MARKS = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs CUDA")]
# make gpu-check: the model targets (float16 channels_last, batch 32 eager and batch 1 CUDA
# graphs); torch.compile of the models only with FASTPOSE_GPU_CHECK_COMPILE=1 (minutes of compiling).
QUICK_MODELS = ("hrnet_w32", "hourglass-8")
QUICK_COMPILE = os.environ.get("FASTPOSE_GPU_CHECK_COMPILE", "0") == "1"


def _cuda_marks(key, dtype, batch, impl, graph):
    quick = key in QUICK_MODELS and dtype == torch.float16 and (
        (batch == 32 and not graph and (impl != "compile" or QUICK_COMPILE)) or (batch == 1 and graph))
    return CUDA_MARKS + ([pytest.mark.gpu_quick] if quick else [])

# key -> (name, kwargs, (H, W)): the papers' input sizes
MODELS = {"hourglass-2": ("hourglass", dict(stacks=2), (256, 256)),
          "hourglass-8": ("hourglass", dict(stacks=8), (256, 256)),
          "hrnet_w32": ("hrnet_w32", {}, (256, 192)),
          "hrnet_w48": ("hrnet_w48", {}, (384, 288)),
          "cpm": ("cpm", {}, (368, 368)),
          "cpm_vgg": ("cpm_vgg", {}, (368, 368)),
          "hpm_hourglass-4": ("hpm_hourglass", dict(stacks=4), (256, 256)),
          "binary_hpm_hourglass-1": ("binary_hpm_hourglass", dict(stacks=1, num_joints=16), (256, 256))}

_CACHE = {}


def conv_macs(key, batch):
    """Conv2d (incl. XNOR) multiply-accumulates of one forward, counted on meta tensors (no compute)."""
    if key not in _CACHE:
        name, kw, (h, w) = MODELS[key]
        total = [0]

        def hook(mod, inp, out):
            total[0] += mod.weight.numel() * out.shape[-2] * out.shape[-1]

        with torch.device("meta"):
            m = models.create(name, backend="torch", **kw).eval()
            hs = [mod.register_forward_hook(hook) for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
            with torch.no_grad():
                m(torch.empty(1, 3, h, w))
        for hd in hs:
            hd.remove()
        _CACHE[key] = total[0]
    return _CACHE[key] * batch


def _build(key, backend, impl, device, dtype, channels_last):
    name, kw, _ = MODELS[key]
    torch.manual_seed(0)
    m = models.create(name, backend="torch" if impl in ("eager", "compile") else backend, **kw).eval()
    if name == "binary_hpm_hourglass" and impl == "fastpose":
        m = models.set_backend(fnn.pack(m), "fastpose")
    m = m.to(device=device, dtype=dtype)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m


def _cpu_params():
    out = []
    for key in MODELS:
        impls = ["fastpose", "eager"] + (["fastpose_unpacked"] if key.startswith("binary") else [])
        for t in CPU_THREADS:
            for impl in impls:
                out.append(pytest.param(key, t, impl, id=f"cpu-{key}-t{t}-{impl}"))
    return out


@pytest.mark.parametrize("key,threads,impl", _cpu_params())
def test_model_cpu(benchmark, key, threads, impl):
    name, kw, (h, w) = MODELS[key]
    m = _build(key, "fastpose", impl, "cpu", torch.float32, False)
    x = torch.randn(1, 3, h, w)
    tag(benchmark, op=f"model_{key}", impl=impl, case=f"{key} {h}x{w} bs1", dtype=torch.float32, device="cpu",
        threads=threads, macs=conv_macs(key, 1), note="eager = the torch backend of the same modules and weights")

    def fwd():
        with torch.no_grad():
            return m(x)

    with num_threads(threads):
        run(benchmark, fwd, "cpu", rounds=3, warmup=1)


def _cuda_params():
    out = []
    for key in MODELS:
        for dtype in (torch.float32, torch.float16):
            for batch in (1, 32):
                for impl in ("fastpose", "eager"):
                    out.append(pytest.param(key, dtype, batch, impl, False,
                                            marks=_cuda_marks(key, dtype, batch, impl, False),
                                            id=f"cuda-{key}-{str(dtype)[6:]}-bs{batch}-{impl}"))
        for impl in ("fastpose", "eager"):
            out.append(pytest.param(key, torch.float16, 1, impl, True, marks=_cuda_marks(key, torch.float16, 1, impl, True),
                                    id=f"cuda-{key}-float16-bs1-{impl}-graph"))
        out.append(pytest.param(key, torch.float16, 32, "compile", False,
                                marks=_cuda_marks(key, torch.float16, 32, "compile", False),
                                id=f"cuda-{key}-float16-bs32-compile"))
    return out


@pytest.mark.parametrize("key,dtype,batch,impl,graph", _cuda_params())
def test_model_cuda(benchmark, key, dtype, batch, impl, graph):
    name, kw, (h, w) = MODELS[key]
    cl = dtype == torch.float16  # float16 runs channels_last, float32 NCHW
    m = _build(key, "fastpose", impl, "cuda", dtype, cl)
    x = torch.randn(batch, 3, h, w, device="cuda", dtype=dtype)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    label = impl + ("_cudagraph" if graph else "")
    tag(benchmark, op=f"model_{key}", impl=label, case=f"{key} {h}x{w} bs{batch}{' channels_last' if cl else ''}",
        dtype=dtype, device="cuda", macs=conv_macs(key, batch),
        note="eager = the torch backend; compile = torch.compile of the torch backend")
    if impl == "compile":
        m = torch.compile(m)

    def fwd():
        with torch.no_grad():
            return m(x)

    if graph:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fwd()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fwd()
        run(benchmark, g.replay, "cuda")
    else:
        run(benchmark, fwd, "cuda")
