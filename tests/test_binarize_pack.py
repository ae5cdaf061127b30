"""fastpose.ops.binarize_pack against the plain-PyTorch packing, on every CPU ISA path."""
import pytest
import torch

import fastpose
from fastpose.ops import binarize_pack, binary_unpack
from fastpose.ops.xnor_conv import binarize_pack_reference, packed_words

from conftest import DEVICES


@pytest.mark.parametrize("C", [1, 3, 31, 33, 64, 65, 100, 128, 257])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_pack_matches_reference(isa, C, layout):
    x = torch.randn(2, C, 5, 11)
    x[0, 0, 0, :3] = torch.tensor([0.0, -0.0, float("nan")])
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(2, 2 * C, 5, 22)[:, ::2, :, ::2]
    got = binarize_pack(x)
    assert got.dtype == torch.int64 and got.shape == (2, 5, 11, packed_words(C))
    assert torch.equal(got, binarize_pack_reference(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_pack_dtypes_and_signed_zero(isa, dtype):
    x = torch.randn(3, 70, 4, 9, dtype=torch.float64)
    x[0, :4, 0, 0] = torch.tensor([0.0, -0.0, float("nan"), -float("inf")], dtype=torch.float64)
    x[1, 0, 0, 0] = -1e-300  # negative in float64 (a float32 rounding would make it -0.0, i.e. +1)
    x = x.to(dtype)
    p = binarize_pack(x)
    assert torch.equal(p, binarize_pack_reference(x))
    w0 = int(p[0, 0, 0, 0])
    assert (w0 & 1, (w0 >> 1) & 1, (w0 >> 2) & 1, (w0 >> 3) & 1) == (1, 1, 0, 0)  # 0, -0 -> +1; nan, -inf -> -1
    if dtype == torch.float64:
        assert int(p[1, 0, 0, 0]) & 1 == 0


def test_pad_bits_are_zero_and_unpack_roundtrip():
    x = torch.randn(2, 67, 3, 4).abs()  # every real channel +1
    p = binarize_pack(x)
    assert torch.all(p[..., 0] == -1)  # all 64 bits set
    assert torch.all(p[..., 1] == 0b111)  # channels 64..66 only
    y = torch.randn(2, 67, 3, 4)
    assert torch.equal(binary_unpack(binarize_pack(y), 67), fastpose.ops.binarize(y))


@pytest.mark.parametrize("shape", [(0, 5, 3, 3), (2, 5, 0, 3), (1, 1, 1, 1)])
def test_pack_empty_and_tiny(shape):
    x = torch.randn(shape)
    assert torch.equal(binarize_pack(x), binarize_pack_reference(x))


@pytest.mark.parametrize("device", DEVICES)
def test_pack_device(device):
    x = torch.randn(2, 130, 7, 9, device=device)
    assert torch.equal(binarize_pack(x).cpu(), binarize_pack_reference(x.cpu()))


def test_pack_bad_input():
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        binarize_pack(torch.randn(3, 4, 5))
    with pytest.raises(TypeError, match="x must have dtype"):
        binarize_pack(torch.ones(1, 2, 3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="packed has 1 words"):
        binary_unpack(torch.zeros(1, 2, 2, 1, dtype=torch.int64), 65)


def test_pack_opcheck():
    torch.library.opcheck(torch.ops.fastpose.binarize_pack.default, (torch.randn(2, 70, 3, 5),))
