"""One small case of every CUDA and Triton kernel of fastpose, for `compute-sanitizer --tool memcheck`
(tools/gpu_check.sh). Each case also checks its result against the PyTorch reference, so a run
under the sanitizer is a correctness run too. Sizes are odd and small: memcheck is slow, and the
edges (masked tails, partial tiles, border taps) are where out-of-bounds accesses hide.
Exit status 0 when every case matched; the sanitizer's own exit status reports memory errors.
"""
import sys

import torch

import fastpose  # noqa: F401
from fastpose.ops import binarize_pack, xnor_alpha, xnor_conv2d, xnor_conv2d_packed
from fastpose.ops.hr_fuse import hr_fuse, hr_fuse_reference
from fastpose.ops.softmax_dsnt import (softmax_dsnt, softmax_dsnt_reference, softmax_dsnt_with_reg,
                                       softmax_dsnt_with_reg_reference)
from fastpose.ops.upsample_add import upsample_add, upsample_add_reference
from fastpose.ops.xnor_conv import binarize_pack_reference, xnor_conv2d_reference

DEV = "cuda"
failures = []


def case(name):
    def deco(fn):
        try:
            fn()
            torch.cuda.synchronize()
            print("ok  ", name, flush=True)
        except Exception as e:  # keep going: one report for every kernel
            failures.append(name)
            print("FAIL", name, type(e).__name__, str(e)[:500], flush=True)
        return fn
    return deco


def close(a, b, tol):
    torch.testing.assert_close(a.double().cpu(), b.double().cpu(), atol=tol, rtol=tol)


@case("softmax_dsnt fwd+bwd: 16-byte path, scalar path, channels_last (strided), W == 1")
def _():
    for shape, cl in [((2, 3, 8, 16), False), ((2, 3, 7, 5), False), ((2, 5, 6, 9), True), ((1, 2, 9, 1), False)]:
        x = torch.randn(shape, device=DEV) * 3
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        c = softmax_dsnt(x)
        close(c, softmax_dsnt_reference(x.detach()), 2e-6)
        g = torch.randn_like(c)
        c.backward(g)
        xr = x.detach().double().requires_grad_()
        softmax_dsnt_reference(xr).backward(g.double())
        close(x.grad, xr.grad, 1e-5)


@case("softmax_dsnt_with_reg fwd+bwd (KL, JS), float16")
def _():
    for kind in ("kl", "js"):
        x = (torch.randn(2, 3, 11, 13, device=DEV) * 2).half().requires_grad_()
        t = torch.rand(2, 3, 2, device=DEV) * 1.6 - 0.8
        c, d = softmax_dsnt_with_reg(x, t, 1.5, kind)
        rc, rd = softmax_dsnt_with_reg_reference(x.detach(), t, 1.5, kind)
        close(c, rc, 3e-3)
        close(d, rd, 5e-3)
        (c.float().sum() + d.float().sum()).backward()


@case("binarize_pack: NCHW (thread per pixel) and channels_last (warp ballots), 3 dtypes, C = 70")
def _():
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for cl in (False, True):
            x = torch.randn(2, 70, 5, 7, device=DEV).to(dtype)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            assert torch.equal(binarize_pack(x).cpu(), binarize_pack_reference(x.cpu()))


@case("xnor_conv2d: float16 channels_last, pad_value -1, stride 2, Cout 70; packed + folded BN")
def _():
    x = torch.randn(2, 70, 9, 11, device=DEV).half().contiguous(memory_format=torch.channels_last)
    w = torch.randn(70, 70, 3, 3, device=DEV)
    b = torch.randn(70, device=DEV)
    out = xnor_conv2d(x, w, b, stride=2, padding=1, pad_value=-1)
    ref = xnor_conv2d_reference(x.cpu(), w.cpu(), b.cpu(), stride=2, padding=1, pad_value=-1)
    assert torch.equal(out.cpu(), ref), (out.cpu() - ref).abs().max()
    xp, wp, a = binarize_pack(x), binarize_pack(w), xnor_alpha(w)
    s, t = torch.rand(70, device=DEV) + 0.5, torch.randn(70, device=DEV)
    o2 = xnor_conv2d_packed(xp, wp, a, b, 70, 1, 1, bn_scale=s, bn_shift=t)
    r2 = xnor_conv2d_reference(xp.cpu(), w.cpu(), b.cpu(), 1, 1, alpha=a.cpu())
    r2 = r2 * s.cpu().view(1, -1, 1, 1) + t.cpu().view(1, -1, 1, 1)
    close(o2, r2, 1e-5)  # the reference's BN is a separate op; the kernel's is exact per element


@case("upsample_add fwd+bwd (Triton), NCHW and channels_last, factor 3x2")
def _():
    for cl in (False, True):
        fmt = torch.channels_last if cl else torch.contiguous_format
        low = torch.randn(2, 5, 3, 7, device=DEV).contiguous(memory_format=fmt).requires_grad_()
        skip = torch.randn(2, 5, 9, 14, device=DEV).contiguous(memory_format=fmt).requires_grad_()
        out = upsample_add(low, skip)
        close(out, upsample_add_reference(low.detach(), skip.detach()), 0)
        out.backward(torch.randn_like(out))


@case("hr_fuse fwd+bwd (Triton), 3 inputs")
def _():
    xs = [torch.randn(2, 3, 16 // f, 12 // f, device=DEV).requires_grad_() for f in (1, 2, 4)]
    out = hr_fuse(xs)
    close(out, hr_fuse_reference([x.detach() for x in xs]), 1e-6)
    out.backward(torch.randn_like(out))


if __name__ == "__main__":
    print(f"{len(failures)} case(s) failed" if failures else "every case matched its reference")
    sys.exit(1 if failures else 0)
