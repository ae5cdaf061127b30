"""hr_fuse as in HRNet-W32 at 256x192, batch 32: the final fusion (branch 0, 32 ch at 64x48, plus the
1x1-conv outputs of branches 1-3: 32 ch at 32x24, 16x12, 8x6) and the stage-3 fusions into branch 0
(32 ch: 64x48 + 32x24 + 16x12) and branch 1 (64 ch: 32x24 + 16x12). fastpose against eager and
torch.compile of the reference; CPU (1 thread and all) and CUDA, float32 and float16.
bytes = every input read once + the output written once.
"""
import pytest
import torch

from fastpose.ops.hr_fuse import hr_fuse, hr_fuse_reference

from _common import CPU_THREADS, implementations, num_threads, rotation, run, tag

CUDA = torch.cuda.is_available()
CASES = {
    "final": (32, [(32, 64, 48), (32, 32, 24), (32, 16, 12), (32, 8, 6)]),
    "stage3-b0": (32, [(32, 64, 48), (32, 32, 24), (32, 16, 12)]),
    "stage3-b1": (32, [(64, 32, 24), (64, 16, 12)]),
}
_impl = implementations(hr_fuse, hr_fuse_reference)


def _params():
    out = []
    for device in ("cpu", "cuda"):
        marks = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs CUDA")] if device == "cuda" else []
        for case in CASES:
            for dtype in (torch.float32, torch.float16):
                if device == "cpu" and dtype == torch.float16 and case != "final":
                    continue
                for t in ([None] if device == "cuda" else CPU_THREADS):
                    quick = device == "cuda" and case == "final" and dtype == torch.float16  # make gpu-check
                    for impl in ("fastpose", "eager", "compile"):
                        out.append(pytest.param(device, case, dtype, t, impl,
                                                marks=marks + ([pytest.mark.gpu_quick] if quick else []),
                                                id=f"{device}-{case}-{str(dtype)[6:]}-t{t}-{impl}"))
    return out


@pytest.mark.parametrize("device,case,dtype,threads,impl", _params())
def test_hr_fuse(benchmark, device, case, dtype, threads, impl):
    N, shapes = CASES[case]
    xs = [torch.randn(N, c, h, w, device=device, dtype=dtype) for c, h, w in shapes]
    fn = _impl(impl)
    nbytes = (sum(x.numel() for x in xs) + xs[0].numel()) * xs[0].element_size()
    tag(benchmark, op="hr_fuse", impl=impl, case=case, dtype=dtype, device=device, threads=threads, bytes=nbytes)
    if device == "cpu":
        with num_threads(threads):
            run(benchmark, lambda: fn(xs), device)
    else:
        def make():
            return [torch.randn(N, c, h, w, device=device, dtype=dtype) for c, h, w in shapes]
        run(benchmark, fn, device, sets=[xs] + rotation(make, nbytes, device)[1:])
