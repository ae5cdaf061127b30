"""fastpose.ops.softmax_dsnt and softmax_dsnt_with_reg against the slow PyTorch reference."""
import os
import subprocess
import sys

import pytest
import torch

import fastpose
from fastpose.ops.softmax_dsnt import (
    softmax_dsnt,
    softmax_dsnt_reference,
    softmax_dsnt_with_reg,
    softmax_dsnt_with_reg_reference,
)

from conftest import DEVICES

SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (3, 2, 17, 33), (2, 4, 64, 48), (1, 2, 1, 9), (2, 1, 11, 1),
          (1, 3, 40, 100), (0, 3, 8, 8), (2, 0, 8, 8)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
TOL = {torch.float32: 2e-6, torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _close(a, b, dtype):
    torch.testing.assert_close(a.double(), b.double(), atol=TOL[dtype], rtol=TOL[dtype])


def _logits(shape, dtype, device, scale=3.0):
    return (torch.randn(shape, device=device, dtype=torch.float64) * scale).to(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_reference(shape, dtype, device):
    x = _logits(shape, dtype, device)
    out = softmax_dsnt(x)
    assert out.shape == (shape[0], shape[1], 2) and out.dtype == dtype
    _close(out, softmax_dsnt_reference(x), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["js", "kl"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 1), (3, 2, 17, 33), (2, 4, 64, 48), (0, 2, 4, 4)])
def test_reg_forward_matches_reference(shape, dtype, kind, device):
    x = _logits(shape, dtype, device, scale=2.0)
    t = torch.rand(shape[0], shape[1], 2, device=device) * 1.6 - 0.8
    sigma = float(torch.empty(()).uniform_(0.5, 3.0))
    c, d = softmax_dsnt_with_reg(x, t, sigma, kind)
    rc, rd = softmax_dsnt_with_reg_reference(x, t, sigma, kind)
    _close(c, rc, dtype)
    tol = {torch.float32: 5e-5, torch.float64: 1e-10, torch.float16: 5e-3, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(d.double(), rd.double(), atol=tol, rtol=tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced", "batch_stride"])
def test_non_contiguous(layout, device):
    base = _logits((4, 6, 12, 10), torch.float32, device)
    if layout == "channels_last":
        x = base.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = base.transpose(2, 3)
    elif layout == "sliced":
        x = base[:, ::2, 1:, :7]
    else:
        x = base[::2]
    _close(softmax_dsnt(x), softmax_dsnt_reference(x), torch.float32)
    g = torch.randn(x.shape[0], x.shape[1], 2, device=device)
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    softmax_dsnt(xa).backward(g)
    softmax_dsnt_reference(xb).backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", [None, "js", "kl"])
def test_backward_matches_reference(dtype, kind, device):
    x = _logits((3, 5, 13, 37), dtype, device, scale=2.0)
    t = torch.rand(3, 5, 2, device=device) - 0.5
    gc = torch.randn(3, 5, 2, device=device, dtype=dtype)
    gd = torch.randn(3, 5, device=device, dtype=dtype)
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    if kind is None:
        softmax_dsnt(xa).backward(gc)
        softmax_dsnt_reference(xb).backward(gc)
    else:
        c, d = softmax_dsnt_with_reg(xa, t, 1.0, kind)
        ((c * gc).sum() + (d * gd).sum()).backward()
        c, d = softmax_dsnt_with_reg_reference(xb, t, 1.0, kind)
        ((c.float() * gc.float()).sum() + (d.float() * gd.float()).sum()).backward()
    # the divergences' gradients carry log(p) terms of up to ~10: float32 rounding shows at 1e-5
    tol = {torch.float32: 1e-6 if kind is None else 3e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(xa.grad.double(), xb.grad.double(), atol=tol, rtol=tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 3, 6, 5), (1, 2, 1, 4), (2, 1, 7, 1)])
def test_gradcheck(shape, device):
    x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
    t = torch.rand(shape[0], shape[1], 2, dtype=torch.float64, device=device) - 0.5
    assert torch.autograd.gradcheck(softmax_dsnt, (x,))
    for kind in ("js", "kl"):
        assert torch.autograd.gradcheck(lambda v: softmax_dsnt_with_reg(v, t, 1.3, kind), (x,))
        assert torch.autograd.gradcheck(lambda v: softmax_dsnt_with_reg(v, t, 0.7, kind)[1], (x,))


def test_double_backward():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    t = torch.rand(2, 3, 2, dtype=torch.float64) - 0.5
    assert torch.autograd.gradgradcheck(softmax_dsnt, (x,))
    assert torch.autograd.gradgradcheck(lambda v: softmax_dsnt_with_reg(v, t, 1.0, "js"), (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = torch.randn(2, 3, 9, 7, device=device, requires_grad=True)
    t = torch.rand(2, 3, 2, device=device) - 0.5
    torch.library.opcheck(torch.ops.fastpose.softmax_dsnt.default, (x,))
    torch.library.opcheck(torch.ops.fastpose.softmax_dsnt_reg.default, (x, t, 1.0, 2))
    torch.library.opcheck(torch.ops.fastpose.softmax_dsnt_reg.default, (x, t, 2.0, 1))
    _, stats = torch.ops.fastpose.softmax_dsnt(x.detach())
    g = torch.randn(2, 3, 2, device=device)
    torch.library.opcheck(torch.ops.fastpose.softmax_dsnt_backward.default, (g, x.detach(), stats))
    gd = torch.randn(2, 3, device=device)
    torch.library.opcheck(torch.ops.fastpose.softmax_dsnt_reg_backward.default,
                          (g, gd, x.detach(), t, stats, 1.0, 2))


def test_compile_fullgraph():
    torch._dynamo.reset()
    x = torch.randn(2, 3, 8, 6, requires_grad=True)
    t = torch.rand(2, 3, 2) - 0.5

    def loss(v):
        c, d = softmax_dsnt_with_reg(v, t, 1.0, "js")
        return (c - t).norm(dim=-1).mean() + d.mean() + softmax_dsnt(v).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.backward()
    g = x.grad.clone()
    x.grad = None
    loss(x).backward()
    torch.testing.assert_close(out, loss(x))
    torch.testing.assert_close(g, x.grad)


@pytest.mark.slow
def test_compile_inductor():
    torch._dynamo.reset()
    x = torch.randn(2, 3, 8, 6)
    f = torch.compile(lambda v: softmax_dsnt(v * 2.0) + 1.0, fullgraph=True)
    torch.testing.assert_close(f(x), softmax_dsnt(x * 2.0) + 1.0)


@pytest.mark.parametrize("device", DEVICES)
def test_masked_and_extreme_logits(device):
    x = torch.randn(3, 4, 16, 12, device=device) * 1e4
    mask = torch.rand(3, 4, 16, 12, device=device) < 0.7
    mask[..., 0, 0] = False  # every map keeps at least one finite logit
    x = x.masked_fill(mask, float("-inf")).requires_grad_()
    c = softmax_dsnt(x)
    assert torch.isfinite(c).all()
    ref = softmax_dsnt_reference(x.detach())
    torch.testing.assert_close(c, ref, atol=1e-5, rtol=1e-5)
    c.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[mask].abs() < 1e-30).all()
    c2, d2 = softmax_dsnt_with_reg(x.detach(), torch.zeros(3, 4, 2, device=device), 1.0, "js")
    assert torch.isfinite(c2).all() and torch.isfinite(d2).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("offset", [-3000.0, -87.3, 0.0, 41.7, 1000.0, 70000.0])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "row_stride"])
def test_offsets_and_late_maximum(offset, layout, device):
    """Logits far from 0 (the CPU block exp rounds its reference to a multiple of ln2/32 and folds
    it into the rounding shift; |reference| >= 65536 takes the plain path), a maximum far above the
    first chunk's (the chunk is redone), odd sizes and -inf entries; forward and backward."""
    base = torch.randn(3, 5, 67, 53, dtype=torch.float64, device=device) * 3 + offset
    base[1, 2, 50, 7] = base[1, 2].max() + 45.0
    base[2, 1, :, 3] = float("-inf")
    base = base.float()
    if layout == "channels_last":
        x = base.contiguous(memory_format=torch.channels_last)
    elif layout == "row_stride":
        x = torch.nn.functional.pad(base, (0, 3))[..., :53]
    else:
        x = base
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    g = torch.randn(3, 5, 2, device=device)
    ca, cb = softmax_dsnt(xa), softmax_dsnt_reference(xb)
    torch.testing.assert_close(ca, cb, atol=2e-6, rtol=2e-6)
    ca.backward(g)
    cb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-6, rtol=1e-5)
    assert (xa.grad[2, 1, :, 3].abs() < 1e-30).all()


@pytest.mark.parametrize("device", ["cpu"])  # CUDA gives NaN without a host sync: test_cuda_defects.py
def test_all_masked_map_raises(device):
    x = torch.randn(2, 3, 4, 5, device=device)
    x[1, 2] = float("-inf")
    with pytest.raises(ValueError, match="-inf"):
        softmax_dsnt(x)
    with pytest.raises(ValueError, match="-inf"):
        softmax_dsnt_with_reg(x, torch.zeros(2, 3, 2, device=device), 1.0, "kl")


def test_bad_input():
    with pytest.raises(ValueError, match="logits must have 4 dimensions"):
        softmax_dsnt(torch.randn(3, 4, 5))
    with pytest.raises(TypeError, match="logits must have dtype"):
        softmax_dsnt(torch.randint(0, 5, (1, 2, 3, 4)))
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        softmax_dsnt([[1.0]])
    with pytest.raises(ValueError, match="H >= 1 and W >= 1"):
        softmax_dsnt(torch.randn(1, 2, 0, 4))
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"target must have shape \(B, J, 2\)"):
        softmax_dsnt_with_reg(x, torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="kind must be"):
        softmax_dsnt_with_reg(x, torch.zeros(2, 3, 2), kind="l2")
    with pytest.raises(ValueError, match="sigma_t must be > 0"):
        softmax_dsnt_with_reg(x, torch.zeros(2, 3, 2), sigma_t=0.0)


def test_nan_propagates():
    x = torch.randn(1, 2, 6, 6)
    x[0, 1, 3, 3] = float("nan")
    c = softmax_dsnt(x)
    assert torch.isfinite(c[0, 0]).all() and torch.isnan(c[0, 1]).any()


_ISA_SCRIPT = r"""
import torch, fastpose
from fastpose.ops.softmax_dsnt import *
torch.manual_seed(0)
assert fastpose._C.cpu_isa() == "{isa}", fastpose._C.cpu_isa()
for shape in [(2, 3, 5, 7), (3, 2, 17, 33), (2, 2, 64, 48), (1, 1, 1, 19), (1, 1, 70, 1100)]:
    for dt in [torch.float32, torch.float16, torch.bfloat16]:
        x = (torch.randn(shape) * 3).to(dt)
        tol = 2e-6 if dt == torch.float32 else 2e-2
        torch.testing.assert_close(softmax_dsnt(x).double(), softmax_dsnt_reference(x).double(), atol=tol, rtol=tol)
        t = torch.rand(shape[0], shape[1], 2) - 0.5
        for kind in ("js", "kl"):
            c, d = softmax_dsnt_with_reg(x, t, 1.5, kind)
            _, rd = softmax_dsnt_with_reg_reference(x, t, 1.5, kind)
            torch.testing.assert_close(d.double(), rd.double(), atol=max(tol, 5e-5), rtol=max(tol, 5e-5))
        xa = x.float().requires_grad_(); xb = x.float().requires_grad_()
        c, d = softmax_dsnt_with_reg(xa, t, 1.0, "js"); (c.sum() + d.sum()).backward()
        c, d = softmax_dsnt_with_reg_reference(xb, t, 1.0, "js"); (c.sum() + d.sum()).backward()
        torch.testing.assert_close(xa.grad, xb.grad, atol=1e-6, rtol=1e-5)
        xa = x.float().requires_grad_(); xb = x.float().requires_grad_()
        g = torch.randn(shape[0], shape[1], 2)
        softmax_dsnt(xa).backward(g); softmax_dsnt_reference(xb).backward(g)
        torch.testing.assert_close(xa.grad, xb.grad, atol=1e-6, rtol=1e-5)
# the block exp's reference is rounded to a multiple of ln2/32 (ln2/8) and folded into its shift:
# logits far from 0, a later chunk far above the first one (the chunk is redone), and huge logits
# (|reference| >= 65536: the plain path)
for off in [-3000.0, -87.3, 0.0, 41.7, 1000.0, 70000.0]:
    x = (torch.randn(2, 3, 64, 52, dtype=torch.float64) * 3 + off).float()
    x[1, 2, 50, 7] = x[1, 2].max() + 45.0
    xa = x.clone().requires_grad_(); xb = x.clone().requires_grad_()
    g = torch.randn(2, 3, 2)
    ca = softmax_dsnt(xa); cb = softmax_dsnt_reference(xb)
    torch.testing.assert_close(ca, cb, atol=2e-6, rtol=2e-6)
    ca.backward(g); cb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-6, rtol=1e-5)
print("ok")
"""


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_every_isa_path(isa):
    info = fastpose.build_info()
    if isa != "portable" and not info[f"{isa}_supported"]:
        pytest.skip(f"this CPU has no {isa}")
    env = dict(os.environ, FASTPOSE_ISA=isa)
    r = subprocess.run([sys.executable, "-c", _ISA_SCRIPT.replace("{isa}", isa)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def test_unsupported_isa_is_a_clear_error():
    if fastpose.build_info()["avx512_supported"]:
        pytest.skip("this CPU has AVX-512")
    env = dict(os.environ, FASTPOSE_ISA="avx512")
    r = subprocess.run([sys.executable, "-c", "import torch, fastpose; fastpose.ops.softmax_dsnt(torch.randn(1,1,2,2))"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "does not support it" in r.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_kernel_launch_per_direction():
    """At (1, 68, 64, 64) float32 the forward and the backward are one kernel launch each."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(1, 68, 64, 64, device="cuda", requires_grad=True)
    g = torch.randn(1, 68, 2, device="cuda")
    softmax_dsnt(x).backward(g)
    torch.cuda.synchronize()
    for direction in ("forward", "backward"):
        x.grad = None
        c = softmax_dsnt(x) if direction == "backward" else None
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            if direction == "forward":
                softmax_dsnt(x)
            else:
                c.backward(g)
            torch.cuda.synchronize()
        kernels = [e.name for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA and "emcpy" not in e.name
                   and "emset" not in e.name]
        assert len(kernels) == 1, (direction, kernels)


# The backward writes large gradients with non-temporal stores (whole aligned vectors; the rest of a
# chunk with plain stores). FASTPOSE_STREAM_STORES=1 forces that path at any size: aligned maps
# (H*W a multiple of 16), unaligned ones, tails shorter than a block, and a default-size case above
# the 4 MiB threshold.
@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"], indirect=True)
@pytest.mark.parametrize("stream", ["1", "0", ""])
@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (3, 2, 64, 48), (2, 3, 17, 33), (1, 2, 5, 80), (1, 1, 1, 16)])
def test_backward_streaming_stores(shape, stream, isa, monkeypatch):
    monkeypatch.setenv("FASTPOSE_STREAM_STORES", stream)
    x = _logits(shape, torch.float32, "cpu")
    g = torch.randn(shape[0], shape[1], 2)
    xa = x.clone().requires_grad_()
    xb = x.double().requires_grad_()
    softmax_dsnt(xa).backward(g)
    softmax_dsnt_reference(xb).backward(g.double())
    torch.testing.assert_close(xa.grad.double(), xb.grad, atol=1e-6, rtol=1e-5)


def test_backward_streaming_stores_large(monkeypatch):
    monkeypatch.delenv("FASTPOSE_STREAM_STORES", raising=False)
    x = _logits((8, 16, 96, 96), torch.float32, "cpu")  # 4.7 MB of gradient: streamed by default
    g = torch.randn(8, 16, 2)
    xa = x.clone().requires_grad_()
    softmax_dsnt(xa).backward(g)
    monkeypatch.setenv("FASTPOSE_STREAM_STORES", "0")
    xb = x.clone().requires_grad_()
    softmax_dsnt(xb).backward(g)
    assert torch.equal(xa.grad, xb.grad)  # the same arithmetic, only the store instruction differs


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"], indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", [(1, 2, 4, 16), (1, 2, 33, 7), (1, 2, 64, 64)])
def test_nan_among_minus_inf_is_nan_not_masked(shape, dtype, isa):
    # A map of -inf with one NaN: torch.softmax gives NaN; only a map of nothing but -inf raises.
    x = torch.full(shape, float("-inf"), dtype=dtype)
    x[0, 0, shape[2] // 2, shape[3] - 1] = float("nan")
    x[0, 1] = torch.randn(shape[2:], dtype=dtype)
    c = softmax_dsnt(x)
    assert torch.isnan(c[0, 0]).all() and torch.isfinite(c[0, 1]).all()
    coords, div = softmax_dsnt_with_reg(x, torch.zeros(1, 2, 2, dtype=dtype), 1.0, "js")
    assert torch.isnan(coords[0, 0]).all() and torch.isnan(div[0, 0])
    x[0, 0, shape[2] // 2, shape[3] - 1] = float("-inf")
    with pytest.raises(ValueError, match="-inf"):
        softmax_dsnt(x)
