"""Regression tests of the defects issue 12 found by reading the CUDA / Triton code. CPU cases run
in the default suite (the same semantics must hold there); CUDA cases are marked `cuda`
(make gpu-check). The flag / PTX checks of defect 3 are in test_cuda_compile.py."""
import os
import subprocess
import sys

import pytest
import torch

from fastpose.ops import binarize_pack, xnor_alpha, xnor_conv2d, xnor_conv2d_packed
from fastpose.ops.softmax_dsnt import softmax_dsnt, softmax_dsnt_reference, softmax_dsnt_with_reg
from fastpose.ops.xnor_conv import binarize_pack_reference, xnor_conv2d_reference

from conftest import DEVICES

CUDA = torch.cuda.is_available()


# ---------------------------------------------------------------- 1. W == 1 row stride (softmax_dsnt)

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["slice_w1", "channels_last_w1", "slice_h1", "transposed_w1"])
def test_softmax_dsnt_size_one_axes(device, layout):
    base = torch.randn(2, 3, 7, 5, device=device) * 3
    if layout == "slice_w1":
        x = base[..., :1]  # (2, 3, 7, 1), row stride 5
    elif layout == "channels_last_w1":
        x = torch.randn(2, 3, 7, 1, device=device).contiguous(memory_format=torch.channels_last)
    elif layout == "slice_h1":
        x = base[:, :, 2:3, :]  # (2, 3, 1, 5)
    else:
        x = base.transpose(2, 3)[..., :1]  # (2, 3, 5, 1), row stride 1, map stride 35
    x = x.detach().requires_grad_()
    c = softmax_dsnt(x)
    torch.testing.assert_close(c, softmax_dsnt_reference(x.detach()), atol=2e-6, rtol=2e-6)
    g = torch.randn_like(c)
    c.backward(g)
    xr = x.detach().double().requires_grad_()
    softmax_dsnt_reference(xr).backward(g.double())
    torch.testing.assert_close(x.grad.double(), xr.grad, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- 2. NaN in the 16-byte max scan

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("pos", ["first", "last", "alone"])
def test_softmax_dsnt_nan_among_minus_inf(device, dtype, pos):
    # W = 16: whole 16-byte vectors (4 float32 / 8 float16) per row, the vector path on CUDA.
    x = torch.full((1, 3, 4, 16), float("-inf"), device=device, dtype=dtype)
    vec = 16 // x.element_size()
    x[0, 0, 1, 2 * vec - 1] = float("nan")  # last element of a vector, everything else -inf
    x[0, 1, 1, vec] = float("nan")  # first element of a vector
    x[0, 1, 1, vec + 1] = 0.5
    x[0, 2] = torch.randn(4, 16, device=device, dtype=dtype)  # a finite map next to them
    if pos == "first":
        x[0, 0, 0, 0] = 1.0
    elif pos == "last":
        x[0, 0, 3, 15] = 1.0
    c = softmax_dsnt(x)
    ref = softmax_dsnt_reference(x)
    assert torch.isnan(ref[0, :2]).all()
    assert torch.isnan(c[0, :2]).all(), c
    torch.testing.assert_close(c[0, 2], ref[0, 2], atol=2e-3, rtol=2e-3)


# ---------------------------------------------------------------- 3. subnormals (no flush-to-zero)

def _subnormal(dtype):
    return {torch.float32: 1e-40, torch.float16: 1e-7, torch.bfloat16: 1e-40, torch.float64: 1e-310}[dtype]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("cl", [False, True])
def test_negative_subnormals_pack_as_minus_one(device, dtype, cl):
    tiny = _subnormal(dtype)
    x = torch.randn(2, 67, 3, 5, dtype=torch.float64)
    x = (torch.sign(x) * tiny).to(dtype)  # every entry a +-subnormal
    assert (x != 0).all()
    x[0, 0, 0, 0] = -0.0  # +1
    x[0, 1, 0, 0] = float("nan")  # -1
    x = x.to(device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(binarize_pack(x).cpu(), binarize_pack_reference(x.cpu()))


@pytest.mark.parametrize("device", DEVICES)
def test_subnormal_epilogue_is_exact(device):
    x = torch.randn(1, 70, 6, 5, device=device)
    w = torch.randn(9, 70, 3, 3, device=device)
    alpha = torch.full((9,), 1e-41, device=device)  # dot * alpha: subnormal float32 results
    bias = torch.full((9,), -3e-41, device=device)
    xp, wp = binarize_pack(x), binarize_pack(w)
    out = xnor_conv2d_packed(xp, wp, alpha, bias, 70, 1, 1)
    ref = xnor_conv2d_reference(xp.cpu(), w.cpu(), bias.cpu(), 1, 1, alpha=alpha.cpu())
    assert (ref != 0).any() and (ref.abs() < 1.17e-38).all()
    assert torch.equal(out.cpu(), ref)


# ---------------------------------------------------------------- 4. devices and grid limits

def test_xnor_arguments_on_another_device_cpu():
    x, w = torch.randn(1, 8, 5, 5), torch.randn(4, 8, 3, 3)
    with pytest.raises(ValueError, match="bias on meta"):
        xnor_conv2d(x, w, torch.empty(4, device="meta"), padding=1)
    with pytest.raises(ValueError, match="weight on meta"):
        xnor_conv2d(x, w.to("meta"), None, padding=1)
    xp, wp = binarize_pack(x), binarize_pack(w)
    for name in ("alpha", "bias", "bn_scale", "bn_shift"):
        kw = dict(alpha=xnor_alpha(w), bias=None, bn_scale=torch.ones(4), bn_shift=None)
        kw[name] = torch.ones(4, device="meta")
        with pytest.raises(ValueError, match=f"{name} on meta"):
            xnor_conv2d_packed(xp, wp, kw["alpha"], kw["bias"], 8, 1, 1, bn_scale=kw["bn_scale"],
                               bn_shift=kw["bn_shift"])


@pytest.mark.parametrize("arg", ["bias", "alpha", "bn_scale", "bn_shift", "weight_packed"])
@pytest.mark.parametrize("api", ["public", "op"])
@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_xnor_cuda_rejects_cpu_arguments(arg, api):
    x = torch.randn(1, 8, 5, 5, device="cuda")
    w = torch.randn(4, 8, 3, 3, device="cuda")
    args = dict(weight_packed=binarize_pack(w), alpha=xnor_alpha(w), bias=torch.randn(4, device="cuda"),
                bn_scale=torch.rand(4, device="cuda"), bn_shift=torch.randn(4, device="cuda"))
    args[arg] = args[arg].cpu()
    with pytest.raises(ValueError, match=f"{arg} on cpu" if api == "public" else f"{arg} must be on x's device"):
        if api == "public":
            xnor_conv2d_packed(x, args["weight_packed"], args["alpha"], args["bias"], 8, 1, 1,
                               bn_scale=args["bn_scale"], bn_shift=args["bn_shift"])
        else:  # the C++ checks behind the Python ones
            torch.ops.fastpose.xnor_conv2d_packed(x, args["weight_packed"], args["alpha"], args["bias"], 8, [1, 1],
                                                  [1, 1], [1, 1], 0, args["bn_scale"], args["bn_shift"], None, False)



@pytest.mark.parametrize("name", ["upsample_add", "hr_fuse", "softmax_dsnt", "xnor_conv2d"])
@pytest.mark.skipif(not CUDA or torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.cuda
def test_second_gpu_while_first_is_current(name):
    from fastpose.ops.hr_fuse import hr_fuse, hr_fuse_reference
    from fastpose.ops.upsample_add import upsample_add, upsample_add_reference

    d = torch.device("cuda:1")
    with torch.cuda.device(0):
        if name == "upsample_add":
            low, skip = torch.randn(2, 3, 4, 5, device=d), torch.randn(2, 3, 8, 10, device=d)
            out, ref = upsample_add(low, skip), upsample_add_reference(low, skip)
        elif name == "hr_fuse":
            xs = [torch.randn(2, 3, 8, 6, device=d), torch.randn(2, 3, 4, 3, device=d)]
            out, ref = hr_fuse(xs), hr_fuse_reference(xs)
        elif name == "softmax_dsnt":
            x = torch.randn(2, 3, 8, 6, device=d)
            out, ref = softmax_dsnt(x), softmax_dsnt_reference(x)
        else:
            x, w = torch.randn(1, 70, 6, 5, device=d), torch.randn(9, 70, 3, 3, device=d)
            out, ref = xnor_conv2d(x, w, padding=1), xnor_conv2d_reference(x, w, padding=1)
        torch.cuda.synchronize(d)
    assert out.device == d
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=2e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_xnor_more_than_65535_column_blocks():
    # Cout = 65535 * 64 + 70 output channels of a 1x1 conv on one pixel: two launches along y.
    cout, cin = 65535 * 64 + 70, 3
    w = torch.randn(cout, cin, 1, 1, device="cuda")
    x = torch.randn(1, cin, 1, 1, device="cuda")
    out = xnor_conv2d(x, w, scale=False)
    ref = (torch.where(w[:, :, 0, 0] >= 0, 1.0, -1.0) @ torch.where(x[0, :, 0, 0] >= 0, 1.0, -1.0))
    assert torch.equal(out[0, :, 0, 0], ref)


# ---------------------------------------------------------------- 5. no host sync in the forward

@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_softmax_dsnt_forward_does_not_synchronise():
    x = torch.randn(2, 3, 8, 8, device="cuda")
    t = torch.zeros(2, 3, 2, device="cuda")
    softmax_dsnt(x)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        softmax_dsnt(x)
        softmax_dsnt_with_reg(x, t, 1.0, "js")
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_softmax_dsnt_all_minus_inf_map_is_nan_on_cuda():
    x = torch.randn(2, 3, 4, 5, device="cuda")
    x[1, 2] = float("-inf")
    c = softmax_dsnt(x)
    assert torch.isnan(c[1, 2]).all() and torch.isfinite(c[0]).all() and torch.isfinite(c[1, :2]).all()
    _, d = softmax_dsnt_with_reg(x, torch.zeros(2, 3, 2, device="cuda"), 1.0, "kl")
    assert torch.isnan(d[1, 2]) and torch.isfinite(d[0]).all()


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_softmax_dsnt_sync_checks_raise_like_the_cpu():
    code = ("import torch, fastpose\n"
            "x = torch.randn(2, 3, 4, 5, device='cuda'); x[1, 2] = float('-inf')\n"
            "try:\n    fastpose.ops.softmax_dsnt(x)\nexcept ValueError as e:\n    print('raised', e)\n")
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, FASTPOSE_CUDA_SYNC_CHECKS="1"),
                       capture_output=True, text=True, timeout=300)
    assert "raised" in r.stdout and "-inf" in r.stdout, r.stdout + r.stderr


# ---------------------------------------------------------------- 6. channels_last in place, NHWC pack

@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_softmax_dsnt_channels_last_is_not_copied():
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(4, 17, 16, 12, device="cuda").contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    g = torch.randn(4, 17, 2, device="cuda")
    c = softmax_dsnt(x)
    c.backward(g)
    torch.cuda.synchronize()

    def cuda_kernels(fn):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            out = fn()
            torch.cuda.synchronize()
        return out, [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    # The forward reads the channels_last logits in place: its one kernel and nothing else.
    c2, fwd = cuda_kernels(lambda: softmax_dsnt(x))
    assert len(fwd) == 1 and "softmax_dsnt" in fwd[0], fwd
    # The backward: one kernel of its own (autograd may then restride the leaf's gradient).
    x.grad = None
    _, bwd = cuda_kernels(lambda: c2.backward(g))
    assert len([n for n in bwd if "softmax_dsnt" in n]) == 1, bwd
    torch.testing.assert_close(c, softmax_dsnt_reference(x.detach()), atol=2e-6, rtol=2e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("channels", [1, 31, 32, 33, 64, 65, 130])
@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_binarize_pack_channels_last_warp_path(dtype, channels):
    x = torch.randn(3, channels, 5, 7, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
    x[0, 0, 0, 0] = -0.0
    x[1, -1, 2, 3] = float("nan")
    assert torch.equal(binarize_pack(x).cpu(), binarize_pack_reference(x.cpu()))
    w = torch.randn(5, channels, 3, 3, device="cuda")
    # scale=False: alpha's mean would round differently on the two devices
    out = xnor_conv2d(x, w, padding=1, scale=False)
    assert torch.equal(out.cpu(), xnor_conv2d_reference(x.cpu(), w.cpu(), padding=1, scale=False))


@pytest.mark.parametrize("order", ["flat", "tap"])
@pytest.mark.parametrize("cin", [1, 3, 64, 65, 100, 128, 257, 320])
@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_xnor_k_orders(order, cin, monkeypatch):
    # Issue 12 item 6 (Cin < 256 padded to a 256-bit chunk): the flat K order packs several taps
    # into one chunk; FASTPOSE_XNOR_CUDA_KORDER=tap is the first version's order. Both bit-exact.
    if order == "tap":
        monkeypatch.setenv("FASTPOSE_XNOR_CUDA_KORDER", "tap")
    for k, s, p, d, pv in [(3, 1, 1, 1, 0), (3, 2, 1, 1, -1), (5, 1, 2, 2, 0), (1, 1, 0, 1, 0)]:
        x = torch.randn(2, cin, 9, 11, device="cuda")
        w, b = torch.randn(7, cin, k, k, device="cuda"), torch.randn(7, device="cuda")
        out = xnor_conv2d(x, w, b, s, p, d, True, pv)
        ref = xnor_conv2d_reference(x.cpu(), w.cpu(), b.cpu(), s, p, d, True, pv, alpha=xnor_alpha(w).cpu())
        assert torch.equal(out.cpu(), ref), (k, s, p, d, pv)
