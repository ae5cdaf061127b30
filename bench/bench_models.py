"""End-to-end inference: each model with the fastpose backend against the torch backend (same
modules, same weights), CPU (1 thread and all) and CUDA (float32 and float16 channels_last, batch 1
and 32). Images per second = batch / median time."""
import pytest
import torch

from fastpose import models

from _common import CPU_THREADS, num_threads, run, tag

CUDA = torch.cuda.is_available()
MODELS = {"hourglass-2": ("hourglass", dict(stacks=2), (256, 256)),
          "hourglass-8": ("hourglass", dict(stacks=8), (256, 256)),
          "hrnet_w32": ("hrnet_w32", {}, (256, 192)),
          "hrnet_w48": ("hrnet_w48", {}, (384, 288))}


def _params():
    out = []
    for key in MODELS:
        for backend in ("fastpose", "torch"):
            if key in ("hourglass-2", "hrnet_w32"):
                for t in CPU_THREADS:
                    out.append(pytest.param("cpu", key, torch.float32, 1, t, backend,
                                            id=f"cpu-{key}-t{t}-{backend}"))
            for dtype in (torch.float32, torch.float16):
                for batch in (1, 32):
                    out.append(pytest.param("cuda", key, dtype, batch, None, backend,
                                            marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs CUDA")],
                                            id=f"cuda-{key}-{str(dtype)[6:]}-bs{batch}-{backend}"))
    return out


@pytest.mark.parametrize("device,key,dtype,batch,threads,backend", _params())
def test_model_inference(benchmark, device, key, dtype, batch, threads, backend):
    name, kw, (h, w) = MODELS[key]
    torch.manual_seed(0)
    m = models.create(name, backend=backend, **kw).eval().to(device=device, dtype=dtype)
    x = torch.randn(batch, 3, h, w, device=device, dtype=dtype)
    if device == "cuda":
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    impl = "fastpose" if backend == "fastpose" else "eager"
    tag(benchmark, op=f"model_{key}_bs{batch}", impl=impl, case=f"{key} {h}x{w} bs{batch}", dtype=dtype,
        device=device, threads=threads, note="eager = the torch backend")

    def fwd():
        with torch.no_grad():
            return m(x)

    if device == "cpu":
        with num_threads(threads):
            run(benchmark, fwd, device, rounds=3, warmup=1)
    else:
        run(benchmark, fwd, device)
