"""affine_relu (relu(x * scale + shift) per channel, optionally 2x2 average-pooled): fastpose against eager
and torch.compile of the reference, CPU, float32, channels_last, at the packed HPM model's two projected
shortcut inputs (the stem block's 64 x 128 x 128, pooled, and 128 x 64 x 64). bytes = x read, out written.
"""
import pytest
import torch

from fastpose.ops.affine_relu import affine_relu, affine_relu_reference

from _common import CPU_THREADS, implementations, num_threads, run, tag

CASES = [((1, 64, 128, 128), True), ((1, 128, 64, 64), False), ((8, 64, 128, 128), True)]
_impl = implementations(affine_relu, affine_relu_reference)


@pytest.mark.parametrize("impl", ["fastpose", "eager", "compile"])
@pytest.mark.parametrize("threads", CPU_THREADS)
@pytest.mark.parametrize("shape,pool", CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else
                         ("pool" if v else "plain"))
def test_affine_relu_cpu(benchmark, shape, pool, threads, impl):
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    s, t = torch.randn(shape[1]), torch.randn(shape[1])
    fn = _impl(impl)
    out_el = x.numel() // 4 if pool else x.numel()
    tag(benchmark, op="affine_relu" + ("_pool" if pool else ""), impl=impl, case=shape, dtype=torch.float32,
        device="cpu", threads=threads, bytes=(x.numel() + out_el) * 4)
    with num_threads(threads):
        run(benchmark, lambda: fn(x, s, t, pool), "cpu")
