"""fastpose.ops.affine_relu: the one-pass relu(x * scale + shift) (+ 2x2 average pool) against its
plain-PyTorch definition, bit for bit: odd sizes, empty batches, every layout, float32 / float64, special
values; registration (opcheck), the reference path for gradients, bad input."""
import itertools

import pytest
import torch

from fastpose.ops import affine_relu, affine_relu_reference

SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (1, 64, 16, 16), (3, 17, 9, 4), (2, 130, 6, 11), (0, 8, 4, 4), (2, 5, 1, 8)]


def _inputs(shape, dtype, layout, seed):
    g = torch.Generator().manual_seed(seed)
    N, C, H, W = shape
    x = torch.randn(N, C, H, W, generator=g, dtype=torch.float64).mul(2).to(dtype)
    if x.numel() >= 6:
        x.view(-1)[:6] = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-30], dtype=dtype)
    if layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(N, C, H, 2 * W, generator=g, dtype=torch.float64).to(dtype)[..., ::2]
    s = torch.randn(C, generator=g, dtype=torch.float64).to(dtype)
    t = torch.randn(C, generator=g, dtype=torch.float64).to(dtype)
    return x, s, t


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("pool", [False, True], ids=["plain", "pool"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference_bit_for_bit(shape, pool, dtype):
    if pool and min(shape[2:]) < 2:
        pytest.skip("pooling needs H, W >= 2 (test_bad_input)")
    for layout, seed in itertools.product(["nchw", "cl", "strided"], [0, 1]):
        x, s, t = _inputs(shape, dtype, layout, seed)
        got = affine_relu(x, s, t, pool)
        want = affine_relu_reference(x, s, t, pool)
        assert got.shape == want.shape and got.dtype == dtype
        assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0)), (layout, seed)
        assert torch.equal(got.isnan(), want.isnan())
        if layout == "cl" and min(shape) > 1:
            assert got.is_contiguous(memory_format=torch.channels_last)


def test_threads_agree():
    x, s, t = _inputs((4, 64, 32, 32), torch.float32, "cl", 3)
    outs = []
    for n in (1, 2):
        torch.set_num_threads(n)
        outs.append(affine_relu(x, s, t, True).nan_to_num(7.0))
    assert torch.equal(outs[0], outs[1])


def test_opcheck():
    for layout, pool in itertools.product(["nchw", "cl"], [False, True]):
        x, s, t = _inputs((2, 6, 5, 4), torch.float32, layout, 0)
        x = x.nan_to_num(0.5, 3.0, -3.0)  # opcheck compares outputs with ==
        torch.library.opcheck(torch.ops.fastpose.affine_relu.default, (x, s, t, pool))


def test_gradient_takes_the_reference():
    x, s, t = _inputs((2, 3, 4, 4), torch.float64, "nchw", 0)
    x = x.nan_to_num(0.5, 3.0, -3.0).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: affine_relu(v, s, t, True), (x,))


def test_bad_input():
    x, s, t = _inputs((2, 3, 4, 4), torch.float32, "nchw", 0)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        affine_relu(x[0], s, t)
    with pytest.raises(ValueError, match=r"scale must be \(3,\)"):
        affine_relu(x, s[:2], t)
    with pytest.raises(TypeError, match="shift must have dtype"):
        affine_relu(x, s, t.double())
    with pytest.raises(TypeError, match="x must have dtype"):
        affine_relu(x.to(torch.int32), s, t)
    with pytest.raises(ValueError, match="pool needs H and W >= 2"):
        affine_relu(x[:, :, :1], s, t, pool=True)
    with pytest.raises(ValueError, match="pool needs H and W >= 2"):
        torch.ops.fastpose.affine_relu(x[:, :, :, :1], s, t, True)
    with pytest.raises(ValueError, match="scale / shift must be"):
        torch.ops.fastpose.affine_relu(x, s[:2], t, False)
    with pytest.raises(TypeError, match="float32 or float64"):
        torch.ops.fastpose.affine_relu(x.half(), s.half(), t.half(), False)
