"""fastpose.ops.hr_fuse (C++ on the CPU, Triton on CUDA) against the PyTorch reference."""
import pytest
import torch

import fastpose
from fastpose.ops.hr_fuse import hr_fuse, hr_fuse_reference

from conftest import DEVICES

# output (N, C, H, W) and each low input's factors (sh, sw)
CASES = [((2, 3, 16, 12), [(2, 2), (4, 4), (8, 6)]), ((1, 1, 1, 1), []), ((2, 5, 6, 9), [(3, 1), (2, 3)]),
         ((1, 4, 8, 8), [(1, 1), (2, 2)]), ((0, 3, 8, 8), [(2, 2)]), ((3, 2, 12, 10), [(4, 5)]),
         ((1, 32, 16, 12), [(2, 2), (4, 4), (8, 4), (16, 12)])]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _inputs(case, dtype, device, cl=False):
    (N, C, H, W), factors = case
    xs = [torch.randn(N, C, H, W, dtype=dtype, device=device)]
    xs += [torch.randn(N, C, H // a, W // b, dtype=dtype, device=device) for a, b in factors]
    if cl:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    return xs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_reference(case, dtype, cl, relu, device):
    xs = _inputs(case, dtype, device, cl)
    out = hr_fuse(xs, relu)
    ref = hr_fuse_reference([x.double() for x in xs], relu).to(dtype)
    # the kernel sums in float32 and rounds once; eager rounds after every addition
    tol = {torch.float32: 1e-6, torch.float64: 1e-12, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_backward_matches_reference(dtype, cl, relu, device):
    xs = _inputs(CASES[0], dtype, device, cl)
    g = torch.randn(xs[0].shape, dtype=dtype, device=device)
    a = [x.detach().clone().requires_grad_() for x in xs]
    b = [x.detach().double().requires_grad_() for x in xs]
    out = hr_fuse(a, relu)
    out.backward(g)
    # the ReLU mask comes from the kernel's own output, so compare with a reference masked the same way
    mask = (out.detach().double() > 0) if relu else torch.ones_like(g, dtype=torch.float64)
    hr_fuse_reference(b, relu=False).backward(g.double() * mask)
    tol = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad.double(), y.grad, atol=tol, rtol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    xs = [x.requires_grad_() for x in _inputs(((2, 3, 8, 6), [(2, 2), (4, 3)]), torch.float64, device)]
    assert torch.autograd.gradcheck(lambda *t: hr_fuse(list(t), relu=False), tuple(xs))
    # away from the ReLU kink: shift x0 so no sum sits near 0
    xs[0].data += torch.sign(xs[0].data) * 3
    assert torch.autograd.gradcheck(lambda *t: hr_fuse(list(t), relu=True), tuple(xs))
    assert torch.autograd.gradgradcheck(lambda *t: hr_fuse(list(t), relu=False), tuple(xs))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    xs = [x.requires_grad_() for x in _inputs(CASES[0], torch.float32, device)]
    torch.library.opcheck(torch.ops.fastpose.hr_fuse.default, (xs, True))
    torch.library.opcheck(torch.ops.fastpose.hr_fuse.default, (xs, False))
    xcl = _inputs(CASES[0], torch.float32, device, cl=True)
    torch.library.opcheck(torch.ops.fastpose.hr_fuse.default, (xcl, True))
    out = hr_fuse([x.detach() for x in xs])
    g = torch.randn(out.shape, device=device)
    torch.library.opcheck(torch.ops.fastpose.hr_fuse_backward.default, (g, out, [x.detach() for x in xs], True))


def test_compile_fullgraph():
    torch._dynamo.reset()
    xs = _inputs(CASES[0], torch.float32, "cpu")
    f = torch.compile(lambda a, b, c, d: hr_fuse([a, b, c, d]) + 1, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(f(*xs), hr_fuse_reference(xs) + 1)


def test_nan_and_relu_semantics():
    xs = _inputs(((1, 2, 4, 4), [(2, 2)]), torch.float32, "cpu")
    xs[0][0, 0, 1, 1] = float("nan")
    out = hr_fuse(xs)
    assert torch.isnan(out[0, 0, 1, 1]) and (out[~torch.isnan(out)] >= 0).all()


def test_bad_input():
    xs = _inputs(CASES[0], torch.float32, "cpu")
    with pytest.raises(ValueError, match="non-empty"):
        hr_fuse([])
    with pytest.raises(ValueError, match="integer factor"):
        hr_fuse([xs[0], torch.randn(2, 3, 5, 6)])
    with pytest.raises(ValueError, match="batch and channels"):
        hr_fuse([xs[0], torch.randn(2, 4, 8, 6)])
    with pytest.raises(TypeError, match="dtype"):
        hr_fuse([xs[0], xs[1].half()])
    with pytest.raises(ValueError, match="4 dimensions"):
        hr_fuse([xs[0][0]])


def test_module():
    xs = _inputs(CASES[0], torch.float32, "cpu")
    m = fastpose.nn.HRFuse()
    torch.testing.assert_close(m(xs), hr_fuse_reference(xs))
    m2 = fastpose.nn.HRFuse(relu=False, use_reference=True)
    torch.testing.assert_close(m2(xs), hr_fuse_reference(xs, relu=False))
