"""upsample_add (out = skip + nearest_up(low), factor 2): fastpose against eager and torch.compile of
the reference, CPU (1 thread and all) and CUDA, float32 and float16, NCHW and channels_last.
Outputs are allocated by every call for every implementation. bytes = low + skip read, out written.
"""
import pytest
import torch

from fastpose.ops.upsample_add import upsample_add, upsample_add_reference

from _common import CPU_THREADS, implementations, num_threads, rotation, run, tag

CUDA = torch.cuda.is_available()
# (N, C, H, W) of the output; low is (N, C, H/2, W/2)
SHAPES = [(8, 256, 64, 64), (32, 256, 64, 64), (64, 32, 64, 48), (1, 256, 64, 64)]
_impl = implementations(upsample_add, upsample_add_reference)


def _cases():
    out = []
    for device in ("cpu", "cuda"):
        marks = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs CUDA")] if device == "cuda" else []
        for shape in SHAPES:
            if device == "cpu" and shape[0] == 32:
                continue  # 134 MB outputs: a few seconds per eager call on one core
            for dtype in (torch.float32, torch.float16):
                if device == "cpu" and dtype == torch.float16 and shape != (8, 256, 64, 64):
                    continue
                for cl in (False, True):
                    if device == "cpu" and cl and shape != (8, 256, 64, 64):
                        continue
                    for t in ([None] if device == "cuda" else CPU_THREADS):
                        for impl in ("fastpose", "eager", "compile"):
                            # make gpu-check: the target shape, both dtypes, NCHW
                            quick = device == "cuda" and shape == (32, 256, 64, 64) and not cl
                            out.append(pytest.param(device, shape, dtype, cl, t, impl, id=(
                                f"{device}-{'x'.join(map(str, shape))}-{str(dtype)[6:]}-{'cl' if cl else 'nchw'}"
                                f"-t{t}-{impl}"), marks=marks + ([pytest.mark.gpu_quick] if quick else [])))
    return out


@pytest.mark.parametrize("device,shape,dtype,cl,threads,impl", _cases())
def test_upsample_add(benchmark, device, shape, dtype, cl, threads, impl):
    N, C, H, W = shape
    fmt = torch.channels_last if cl else torch.contiguous_format
    low = torch.randn(N, C, H // 2, W // 2, device=device, dtype=dtype).contiguous(memory_format=fmt)
    skip = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
    fn = _impl(impl)
    nbytes = (low.numel() + 2 * skip.numel()) * skip.element_size()
    tag(benchmark, op="upsample_add" + ("_channels_last" if cl else ""), impl=impl, case=shape, dtype=dtype,
        device=device, threads=threads, bytes=nbytes)
    if device == "cpu":
        with num_threads(threads):
            run(benchmark, lambda: fn(low, skip), device, rounds=10 if skip.numel() > 4e6 else None)
    else:
        def make():
            return (torch.randn(low.shape, device=device, dtype=dtype).contiguous(memory_format=fmt),
                    torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt))
        run(benchmark, fn, device, sets=[(low, skip)] + rotation(make, nbytes, device)[1:])
