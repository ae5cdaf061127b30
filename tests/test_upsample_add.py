"""fastpose.ops.upsample_add (C++ on the CPU, Triton on CUDA) against the PyTorch reference."""
import pytest
import torch

import fastpose
from fastpose.ops.upsample_add import upsample_add, upsample_add_reference

from conftest import DEVICES

# (N, C, h, w, sh, sw): output (N, C, h*sh, w*sw)
CASES = [(2, 3, 4, 5, 2, 2), (1, 1, 1, 1, 1, 1), (2, 5, 3, 7, 3, 1), (1, 4, 8, 6, 2, 4), (3, 2, 5, 5, 1, 3),
         (0, 3, 4, 4, 2, 2), (2, 0, 4, 4, 2, 2), (1, 17, 9, 11, 2, 2), (1, 3, 1, 1, 7, 5)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _pair(case, dtype, device, cl=False):
    N, C, h, w, sh, sw = case
    low = torch.randn(N, C, h, w, dtype=dtype, device=device)
    skip = torch.randn(N, C, h * sh, w * sw, dtype=dtype, device=device)
    if cl:
        low = low.contiguous(memory_format=torch.channels_last)
        skip = skip.contiguous(memory_format=torch.channels_last)
    return low, skip


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_reference(case, dtype, cl, device):
    low, skip = _pair(case, dtype, device, cl)
    out = upsample_add(low, skip)
    ref = upsample_add_reference(low, skip)
    assert out.shape == skip.shape and out.dtype == dtype
    torch.testing.assert_close(out, ref, atol=0, rtol=0)  # one rounding of an exact sum: bit-equal
    if cl and skip.dim() == 4 and skip.numel() and skip.shape[1] > 1 and skip.shape[2] * skip.shape[3] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
def test_backward_matches_reference(dtype, cl, device):
    low, skip = _pair((2, 3, 5, 6, 2, 3), dtype, device, cl)
    g = torch.randn(skip.shape, dtype=dtype, device=device)
    a = [t.detach().clone().requires_grad_() for t in (low, skip)]
    b = [t.detach().clone().requires_grad_() for t in (low, skip)]
    upsample_add(*a).backward(g)
    upsample_add_reference(*b).backward(g)
    tol = {torch.float32: 1e-6, torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(a[0].grad, b[0].grad, atol=tol, rtol=tol)
    torch.testing.assert_close(a[1].grad, b[1].grad, atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_layouts_and_non_contiguous(device):
    low = torch.randn(2, 4, 6, 3, device=device).transpose(2, 3)  # (2, 4, 3, 6) non-contiguous
    skip = torch.randn(2, 4, 6, 12, device=device).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(upsample_add(low, skip), upsample_add_reference(low, skip), atol=0, rtol=0)
    skip2 = torch.randn(2, 4, 12, 6, device=device)[:, :, ::2, :].contiguous()[:, :, :, :]
    torch.testing.assert_close(upsample_add(low, skip2[..., :6]), upsample_add_reference(low, skip2[..., :6]))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    low = torch.randn(2, 3, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
    skip = torch.randn(2, 3, 6, 12, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(upsample_add, (low, skip))
    assert torch.autograd.gradgradcheck(upsample_add, (low, skip))
    lc = low.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    sc = skip.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(upsample_add, (lc, sc))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    low, skip = _pair((2, 3, 4, 5, 2, 2), torch.float32, device)
    low.requires_grad_()
    skip.requires_grad_()
    torch.library.opcheck(torch.ops.fastpose.upsample_add.default, (low, skip))
    lc, sc = _pair((2, 3, 4, 5, 2, 2), torch.float32, device, cl=True)
    torch.library.opcheck(torch.ops.fastpose.upsample_add.default, (lc, sc))
    g = torch.randn(2, 3, 8, 10, device=device)
    torch.library.opcheck(torch.ops.fastpose.upsample_add_backward.default, (g, low.detach()))


def test_compile_fullgraph():
    torch._dynamo.reset()
    low, skip = _pair((2, 3, 4, 5, 2, 2), torch.float32, "cpu")
    f = torch.compile(lambda a, b: upsample_add(a, b) * 2, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(f(low, skip), upsample_add_reference(low, skip) * 2)


def test_bad_input():
    low, skip = _pair((2, 3, 4, 5, 2, 2), torch.float32, "cpu")
    with pytest.raises(ValueError, match="integer factor"):
        upsample_add(torch.randn(2, 3, 3, 5), skip)
    with pytest.raises(ValueError, match="batch and channels"):
        upsample_add(torch.randn(2, 4, 4, 5), skip)
    with pytest.raises(ValueError, match="batch and channels"):
        upsample_add(torch.randn(1, 3, 4, 5), skip)
    with pytest.raises(TypeError, match="dtype"):
        upsample_add(low.double(), skip)
    with pytest.raises(ValueError, match="4 dimensions"):
        upsample_add(low, skip[0])
    with pytest.raises(TypeError, match="dtype"):
        upsample_add(low.int(), skip.int())


def test_module_and_reference_switch():
    low, skip = _pair((2, 3, 4, 5, 2, 2), torch.float32, "cpu")
    m = fastpose.nn.UpsampleAdd()
    torch.testing.assert_close(m(low, skip), upsample_add_reference(low, skip))
    m.use_reference = True
    torch.testing.assert_close(m(low, skip), upsample_add_reference(low, skip))


_ISA_SCRIPT = r"""
import torch, fastpose
from fastpose.ops.upsample_add import upsample_add_reference
from fastpose.ops.hr_fuse import hr_fuse_reference
torch.manual_seed(0)
for dt in (torch.float16, torch.bfloat16, torch.float32):
    for cl in (False, True):
        f = (lambda t: t.contiguous(memory_format=torch.channels_last)) if cl else (lambda t: t)
        low, skip = f(torch.randn(2, 5, 3, 7).to(dt)), f(torch.randn(2, 5, 6, 21).to(dt))
        assert torch.equal(fastpose.ops.upsample_add(low, skip), upsample_add_reference(low, skip))
        xs = [f(torch.randn(2, 3, 8, 12).to(dt)), f(torch.randn(2, 3, 4, 3).to(dt)), f(torch.randn(2, 3, 1, 4).to(dt))]
        torch.testing.assert_close(fastpose.ops.hr_fuse(xs), hr_fuse_reference([x.double() for x in xs]).to(dt),
                                   atol=1e-2, rtol=1e-2)
        a = [x.detach().requires_grad_() for x in xs]
        fastpose.ops.hr_fuse(a).sum().backward()
        assert all(x.grad is not None and torch.isfinite(x.grad.float()).all() for x in a)
print("ok")
"""


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_row_conversions_every_isa(isa):
    """The 16-bit paths convert rows with F16C/AVX2 or portable code: both must agree with the reference."""
    import os
    import subprocess
    import sys

    if isa != "portable" and not fastpose.build_info()[f"{isa}_supported"]:
        pytest.skip(f"this CPU has no {isa}")
    r = subprocess.run([sys.executable, "-c", _ISA_SCRIPT], env=dict(os.environ, FASTPOSE_ISA=isa),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
