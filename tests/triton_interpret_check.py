"""Runs the Triton kernels on the CPU under TRITON_INTERPRET=1 against the PyTorch references.

Executed by tests/test_triton_interpret.py in a subprocess (the variable must be set before triton
is imported). bfloat16 is skipped: the interpreter's bfloat16 loads/stores are wrong.
"""
import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import torch  # noqa: E402

from fastpose.ops.hr_fuse import hr_fuse_reference  # noqa: E402
from fastpose.ops.upsample_add import upsample_add_reference  # noqa: E402
from fastpose.triton_kernels import hr_fuse as thf  # noqa: E402
from fastpose.triton_kernels import upsample_add as tua  # noqa: E402


def fmt(t, cl):
    return t.contiguous(memory_format=torch.channels_last) if cl else t


def check_upsample_add(dtype, cl):
    # (1, 24, 1, 24, 2, 2) channels_last: rows of W * C = 1152 > 1024, tiled by 128 (triton _tiles)
    for (N, C, h, w, sh, sw) in [(2, 3, 4, 5, 2, 2), (1, 5, 3, 7, 3, 1), (2, 2, 1, 1, 4, 6), (1, 1, 5, 9, 1, 1),
                                 (1, 24, 1, 24, 2, 2)]:
        low = fmt(torch.randn(N, C, h, w, dtype=dtype), cl)
        skip = fmt(torch.randn(N, C, h * sh, w * sw, dtype=dtype), cl)
        out = tua.upsample_add_forward(low, skip)
        torch.testing.assert_close(out, upsample_add_reference(low, skip), atol=0, rtol=0)
        assert out.is_contiguous(memory_format=torch.channels_last if cl and C > 1 else torch.contiguous_format)
        g = fmt(torch.randn(skip.shape, dtype=dtype), cl)
        gl = tua.block_sum(g, tuple(low.shape))
        ref = g.double().reshape(N, C, h, sh, w, sw).sum((3, 5)).to(dtype)
        tol = 1e-5 if dtype != torch.float16 else 5e-3
        torch.testing.assert_close(gl, ref, atol=tol, rtol=tol)


def check_hr_fuse(dtype, cl, relu):
    (N, C, H, W) = (2, 3, 16, 12)
    for factors in [[(2, 2), (4, 4), (8, 6)], [(2, 3)], [], [(1, 1), (4, 2)]]:
        xs = [fmt(torch.randn(N, C, H, W, dtype=dtype), cl)]
        xs += [fmt(torch.randn(N, C, H // a, W // b, dtype=dtype), cl) for a, b in factors]
        out = thf.hr_fuse_forward(xs, relu)
        ref = hr_fuse_reference([x.double() for x in xs], relu).to(dtype)
        tol = 1e-6 if dtype != torch.float16 else 2e-3
        torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
        g = fmt(torch.randn(out.shape, dtype=dtype), cl)
        grads = thf.hr_fuse_backward(g, out, xs, relu)
        leaves = [x.detach().double().requires_grad_() for x in xs]
        mask = (out.double() > 0) if relu else torch.ones(out.shape, dtype=torch.float64)
        hr_fuse_reference(leaves, relu=False).backward(g.double() * mask)
        for gr, leaf in zip(grads, leaves):
            torch.testing.assert_close(gr.double(), leaf.grad, atol=10 * tol, rtol=10 * tol)


def main():
    for int64 in (False, True):
        tua.FORCE_INT64 = int64
        for dtype in (torch.float32, torch.float16, torch.float64):
            for cl in (False, True):
                check_upsample_add(dtype, cl)
                for relu in (True, False):
                    check_hr_fuse(dtype, cl, relu)
    print("triton kernels ok under the interpreter")
    return 0


if __name__ == "__main__":
    sys.exit(main())
