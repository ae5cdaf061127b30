"""The fused CPU straight-through backward of xnor_conv2d (xnor_ste_pack + xnor_conv2d_backward_packed):
against autograd of the float64 surrogate, against the composite ATen backward, every ISA path."""
import itertools

import pytest
import torch
import torch.nn.functional as F

import fastpose
from fastpose.nn import XNORConv2d
from fastpose.ops import binarize, binarize_pack, xnor_conv2d

ops = torch.ops.fastpose


def surrogate(x, w, b, stride, padding, dilation, scale, pad_value):
    """Values of the XNOR convolution, gradients of conv2d(clamp(x, -1, 1), alpha(w) * w) + b."""
    xs = x.clamp(-1, 1)
    xs = xs + (binarize(x) - xs).detach()
    if scale:
        alpha = w.abs().mean((1, 2, 3), keepdim=True)
        ws = alpha * w
        ws = ws + (alpha.detach() * binarize(w) - ws).detach()
    else:
        ws = w + (binarize(w) - w).detach()
    if pad_value == -1:
        xs = F.pad(xs, (padding[1], padding[1], padding[0], padding[0]), value=-1.0)
        padding = 0
    return F.conv2d(xs, ws, b, stride=stride, padding=padding, dilation=dilation)


def _x(shape, dtype, channels_last, seed, specials=False):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5).to(dtype)
    flat = x.view(-1)
    flat[:6] = torch.tensor([1.0, -1.0, 0.0, -0.0, 1.0000001, -0.9999999], dtype=dtype)  # window edges, -0
    if specials:
        flat[6:9] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# (N, Cin, Cout, H, W, K, stride, padding, dilation)
GEOMS = [(2, 7, 5, 9, 8, 3, (1, 1), (1, 1), (1, 1)),
         (2, 7, 5, 9, 8, 3, (2, 2), (1, 1), (1, 1)),
         (1, 65, 3, 7, 7, 3, (1, 1), (0, 0), (1, 1)),
         (2, 64, 6, 6, 5, 3, (2, 1), (1, 0), (1, 1)),
         (1, 130, 4, 8, 9, 3, (1, 1), (2, 2), (2, 2)),
         (3, 3, 2, 5, 5, 1, (1, 1), (0, 0), (1, 1))]


@pytest.mark.parametrize("geom", GEOMS, ids=lambda g: "-".join(map(str, g[:6])) + f"-s{g[6][0]}{g[6][1]}-p{g[7][0]}{g[7][1]}")
@pytest.mark.parametrize("pad_value", [0, -1])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("scale,bias", [(True, True), (True, False), (False, True)])
def test_matches_surrogate_float64(geom, pad_value, channels_last, scale, bias):
    N, Cin, Cout, H, W, K, s, p, d = geom
    x = _x((N, Cin, H, W), torch.float64, channels_last, sum(geom[:6])).requires_grad_()
    w = torch.randn(Cout, Cin, K, K, dtype=torch.float64)
    w.view(-1)[0] = 0.0  # sgn(0) = 0 in the alpha chain, sign(0) = +1 in the value
    w.requires_grad_()
    b = torch.randn(Cout, dtype=torch.float64, requires_grad=True) if bias else None
    out = xnor_conv2d(x, w, b, s, p, d, scale, pad_value)
    ref = surrogate(x, w, b, s, p, d, scale, pad_value)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    inputs = (x, w) + ((b,) if bias else ())
    got = torch.autograd.grad(out, inputs, g)
    exp = torch.autograd.grad(ref, inputs, g)
    for a, e in zip(got, exp):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    # the window: no gradient where |x| > 1, some where |x| <= 1
    outside = x.detach().abs() > 1
    assert torch.all(got[0][outside] == 0)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_float32_against_float64_surrogate(channels_last, isa):
    x = _x((3, 70, 10, 11), torch.float32, channels_last, 1).requires_grad_()
    w = torch.randn(9, 70, 3, 3, requires_grad=True)
    b = torch.randn(9, requires_grad=True)
    out = xnor_conv2d(x, w, b, 1, 1, 1, True, -1)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, w, b), g)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    exp = torch.autograd.grad(surrogate(x64, w64, b64, (1, 1), (1, 1), (1, 1), True, -1), (x64, w64, b64),
                              g.double())
    for a, e in zip(got, exp):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-4)


# Stride-1 float32 weight gradients take the table GEMM (core/xnor_ste_gemm.h) on AVX2 / AVX-512:
# odd sizes, every padding up to the kernel, both pad values and layouts, 1 and 2 threads.
TABLE_GEOMS = [(2, 7, 5, 9, 8, 3, 1), (1, 65, 17, 6, 7, 3, 0), (3, 33, 64, 5, 5, 3, 2), (2, 130, 20, 4, 9, 5, 2),
               (16, 32, 32, 4, 4, 3, 1), (1, 24, 70, 11, 3, 1, 0), (2, 64, 64, 2, 2, 3, 1)]


@pytest.mark.parametrize("geom", TABLE_GEOMS, ids=lambda g: "-".join(map(str, g)))
@pytest.mark.parametrize("pad_value", [0, -1])
def test_table_weight_grad_against_float64(geom, pad_value, isa):
    N, Cin, Cout, H, W, K, p = geom
    for cl, threads in [(True, 1), (False, 2)]:
        x = _x((N, Cin, H, W), torch.float32, cl, Cin + p).requires_grad_()
        w = torch.randn(Cout, Cin, K, K, requires_grad=True)
        torch.set_num_threads(threads)
        out = xnor_conv2d(x, w, None, 1, p, 1, True, pad_value)
        g = torch.randn_like(out)
        got = torch.autograd.grad(out, (x, w), g)
        x64, w64 = (t.detach().double().requires_grad_() for t in (x, w))
        exp = torch.autograd.grad(surrogate(x64, w64, None, (1, 1), (p, p), (1, 1), True, pad_value), (x64, w64),
                                  g.double())
        for a, e in zip(got, exp):
            scale = e.abs().max().item() + 1.0
            torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-5 * scale)


# Stride-1 float32 channels_last input gradients take the permute GEMM (core/xnor_ste_input.h) on AVX-512:
# output channels around the groups of 4, input channels around the 16-lane vectors and 64-bit words,
# widths around the register blocks (4, 8), kernels 1-5 (one not square), paddings up to past the kernel.
INPUT_GEOMS = [(2, 7, 5, 9, 8, 3, 3, 1, 1), (1, 65, 17, 6, 7, 3, 3, 0, 0), (3, 33, 64, 5, 5, 3, 3, 2, 2),
               (2, 130, 6, 4, 9, 5, 5, 2, 2), (16, 32, 32, 4, 4, 3, 3, 1, 1), (1, 16, 3, 11, 17, 1, 1, 0, 0),
               (2, 48, 4, 5, 13, 2, 3, 1, 1), (1, 20, 9, 3, 5, 3, 3, 4, 4)]


@pytest.mark.parametrize("geom", INPUT_GEOMS, ids=lambda g: "-".join(map(str, g)))
def test_table_input_grad_against_float64(geom, isa):
    N, Cin, Cout, H, W, KH, KW, ph, pw = geom
    for threads, strided in [(1, False), (2, True)]:
        x = _x((N, Cin, H, W), torch.float32, True, Cin + H, specials=True).requires_grad_()
        w = torch.randn(Cout, Cin, KH, KW)
        w.view(-1)[:2] = torch.tensor([-0.0, 0.0])  # both signed zeros are +1
        w.requires_grad_()
        torch.set_num_threads(threads)
        out = xnor_conv2d(x, w, None, 1, (ph, pw), 1, True, 0)
        g = torch.randn(out.shape[0], out.shape[1] + 3 * strided, *out.shape[2:])
        g = g.contiguous(memory_format=torch.channels_last)[:, 3 * strided:]  # pixel stride past Cout
        gx, = torch.autograd.grad(out, (x,), g)
        assert gx.is_contiguous(memory_format=torch.channels_last)
        x64, w64 = (t.detach().double().requires_grad_() for t in (x, w))
        ref = surrogate(x64, w64, None, (1, 1), (ph, pw), (1, 1), True, 0)
        exp, = torch.autograd.grad(ref, (x64,), g.double())
        assert torch.all(gx[~(x.detach().abs() <= 1)] == 0)  # the window, NaN outside it
        scale = exp.abs().max().item() + 1.0
        torch.testing.assert_close(gx.double(), exp, rtol=1e-4, atol=1e-5 * scale)


def test_table_weight_grad_matches_onednn_path(monkeypatch):
    """FASTPOSE_STE_TABLE=0 (oneDNN's GEMM on unpacked signs) and the table GEMM agree."""
    x = _x((4, 64, 12, 12), torch.float32, True, 5)
    w = torch.randn(32, 64, 3, 3)
    sign, passed = ops.xnor_ste_pack(x)
    g = torch.randn(4, 32, 12, 12).contiguous(memory_format=torch.channels_last)
    for pv in (0, -1):
        args = ([1, 1], [1, 1], [1, 1], True, pv, [True, True, True])
        monkeypatch.setenv("FASTPOSE_STE_TABLE", "0")
        ref = ops.xnor_conv2d_backward_packed(g, sign, passed, w, *args)
        monkeypatch.setenv("FASTPOSE_STE_TABLE", "1")
        got = ops.xnor_conv2d_backward_packed(g, sign, passed, w, *args)
        for a, e in zip(got, ref):  # float32 sums of 576 terms in two orders
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5 * (e.abs().max().item() + 1.0))


def test_ste_pack(isa):
    for dtype, cl, C in itertools.product([torch.float32, torch.float64, torch.float16, torch.bfloat16],
                                          [False, True], [1, 8, 63, 64, 65, 130]):
        x = _x((2, C, 3, 5), dtype, cl, C, specials=True)
        sign, passed = ops.xnor_ste_pack(x)
        assert torch.equal(sign, binarize_pack(x))
        assert torch.equal(passed, binarize_pack(torch.where(x.abs() <= 1, 1.0, -1.0)))
    xs = torch.randn(2, 3, 8, 10)[:, :, ::2, 1::3]  # non-contiguous
    assert torch.equal(ops.xnor_ste_pack(xs)[0], binarize_pack(xs))


MASKS = [[True, True, True], [True, False, False], [False, True, False], [False, False, True], [True, True, False]]


@pytest.mark.parametrize("mask", MASKS, ids=lambda m: "".join("xwb"[i] for i in range(3) if m[i]))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_against_composite(mask, dtype, isa):
    """The fused op and the composite of ATen ops compute the same formula from the same data."""
    geoms = GEOMS if all(mask) else GEOMS[1:3]  # every geometry once with all gradients, a few per mask
    for (N, Cin, Cout, H, W, K, s, p, d), pv, cl in itertools.product(geoms, [0, -1], [False, True]):
        x = _x((N, Cin, H, W), dtype, cl, Cin + H)
        w = torch.randn(Cout, Cin, K, K, dtype=dtype)
        Ho, Wo = [(n + 2 * pp - dd * (K - 1) - 1) // ss + 1 for n, pp, dd, ss in zip((H, W), p, d, s)]
        g = torch.randn(N, Cout, Ho, Wo, dtype=dtype)
        if cl:
            g = g.contiguous(memory_format=torch.channels_last)
        sign, passed = ops.xnor_ste_pack(x)
        args = (list(s), list(p), list(d), True, pv, mask)
        got = ops.xnor_conv2d_backward_packed(g, sign, passed, w, *args)
        exp = ops.xnor_conv2d_backward(g.contiguous(), x, w, *args)
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        for i, (a, e) in enumerate(zip(got, exp)):
            assert a.shape == e.shape, (i, a.shape, e.shape)
            assert a.dtype == e.dtype
            torch.testing.assert_close(a, e, rtol=tol, atol=tol)


def test_empty_and_strided_grad():
    w = torch.randn(4, 6, 3, 3, requires_grad=True)
    x = torch.randn(0, 6, 5, 5, requires_grad=True)
    gx, gw = torch.autograd.grad(xnor_conv2d(x, w, None, 1, 1).sum(), (x, w))
    assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(w))
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    out = xnor_conv2d(x, w, None, 1, 1)
    g = torch.randn(2, 4, 10, 5).transpose(2, 3)[:, :, :, ::2]  # non-contiguous incoming gradient
    got = torch.autograd.grad(out, (x, w), g)
    ref = surrogate(x, w, None, (1, 1), (1, 1), (1, 1), True, 0)
    for a, e in zip(got, torch.autograd.grad(ref, (x, w), g)):
        torch.testing.assert_close(a, e)


def test_saves_bits_not_x():
    x = torch.randn(2, 70, 6, 6, requires_grad=True)
    w = torch.randn(3, 70, 3, 3, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = xnor_conv2d(x, w, None, 1, 1)
    assert sorted(tuple(t.shape) for t in saved) == [(2, 6, 6, 2), (2, 6, 6, 2), (3, 70, 3, 3)]
    assert [t.dtype for t in saved].count(torch.int64) == 2
    torch.autograd.grad(out.sum(), (x, w))  # the saved bits are enough for the backward


def test_double_backward_same_as_unfused():
    """create_graph=True takes the differentiable composite on a stand-in input: same derivatives as the
    composite on the real x (the torch backend's path)."""
    torch.manual_seed(0)
    x = _x((2, 5, 6, 6), torch.float64, True, 3).requires_grad_()
    res = []
    for backend in ("fastpose", "torch"):
        torch.manual_seed(1)
        conv = XNORConv2d(5, 4, 3, padding=1, bias=True, backend=backend, pad_value=-1).double()
        out = conv(x)
        g = torch.randn_like(out, requires_grad=True)
        gx, gw = torch.autograd.grad(out, (x, conv.weight), g, create_graph=True)
        v, u = torch.randn_like(gx), torch.randn_like(gw)
        res.append(torch.autograd.grad((gx * v).sum() + (gw * u).sum(), (g, conv.weight)))
    for a, e in zip(*res):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def test_opcheck():
    x, w = _x((2, 5, 6, 6), torch.float32, True, 0), torch.randn(3, 5, 3, 3)
    torch.library.opcheck(ops.xnor_ste_pack.default, (x,))
    sign, passed = ops.xnor_ste_pack(x)
    g = torch.randn(2, 3, 3, 6)
    torch.library.opcheck(ops.xnor_conv2d_backward_packed.default,
                          (g, sign, passed, w, [2, 1], [1, 1], [1, 1], True, -1, [True, True, True]))
    torch.library.opcheck(ops.xnor_conv2d_backward_packed.default,
                          (g, sign, passed, w, [2, 1], [1, 1], [1, 1], False, 0, [False, True, False]))


def test_torch_compile_training():
    x = torch.randn(2, 20, 7, 7, requires_grad=True)
    w = torch.randn(4, 20, 3, 3, requires_grad=True)
    f = torch.compile(lambda x_, w_: xnor_conv2d(x_, w_, None, padding=1).square().sum(), fullgraph=True)
    got = torch.autograd.grad(f(x, w), (x, w))
    exp = torch.autograd.grad(xnor_conv2d(x, w, None, padding=1).square().sum(), (x, w))
    for a, e in zip(got, exp):
        torch.testing.assert_close(a, e)


def test_bad_input():
    x, w = torch.randn(1, 70, 5, 5), torch.randn(3, 70, 3, 3)
    sign, passed = ops.xnor_ste_pack(x)
    g = torch.randn(1, 3, 5, 5)
    args = ([1, 1], [1, 1], [1, 1], True, 0, [True, True, False])
    with pytest.raises(ValueError, match=r"x_sign / x_pass must both be \(N, H, W, 2\)"):
        ops.xnor_conv2d_backward_packed(g, sign[..., :1], passed, w, *args)
    with pytest.raises(ValueError, match=r"x_sign / x_pass must both be"):
        ops.xnor_conv2d_backward_packed(g, sign, passed[:, :4], w, *args)
    with pytest.raises(TypeError, match="x_sign / x_pass must be int64"):
        ops.xnor_conv2d_backward_packed(g, sign.int(), passed, w, *args)
    with pytest.raises(ValueError, match=r"grad must be \(1, 3, 5, 5\)"):
        ops.xnor_conv2d_backward_packed(g[:, :2], sign, passed, w, *args)
    with pytest.raises(TypeError, match="grad must be float32 or float64"):
        ops.xnor_conv2d_backward_packed(g.half(), sign, passed, w, *args)
    with pytest.raises(ValueError, match="pad_value must be 0 or -1"):
        ops.xnor_conv2d_backward_packed(g, sign, passed, w, [1, 1], [1, 1], [1, 1], True, 2, [True, True, False])
    with pytest.raises(ValueError, match="xnor_ste_pack: x must be"):
        ops.xnor_ste_pack(torch.randn(3, 4))
