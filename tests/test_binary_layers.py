"""fastpose.nn binary layers: XNORConv2d (drop-in for nn.Conv2d), the torch backend, pack(), helpers."""
import io

import pytest
import torch
from torch import nn

import fastpose.nn as fnn
from fastpose.ops import binarize, xnor_conv2d_reference


def test_drop_in_for_conv2d():
    conv = nn.Conv2d(33, 8, 3, stride=2, padding=1, bias=True)
    m = fnn.XNORConv2d(33, 8, 3, stride=2, padding=1, bias=True)
    assert set(m.state_dict()) == set(conv.state_dict())
    m.load_state_dict(conv.state_dict())
    x = torch.randn(2, 33, 9, 9)
    ref = xnor_conv2d_reference(x, conv.weight, conv.bias, 2, 1, 1, True, 0)
    assert torch.equal(m(x), ref)
    m2 = fnn.XNORConv2d(4, 6, (3, 5), padding="same", bias=False, dtype=torch.float64, scale=False, pad_value=-1)
    assert m2.weight.dtype == torch.float64 and m2.bias is None and m2.padding == "same"
    x2 = torch.randn(1, 4, 6, 7, dtype=torch.float64)
    assert torch.equal(m2(x2), xnor_conv2d_reference(x2, m2.weight, None, 1, (1, 2), 1, False, -1))


def test_unsupported_arguments():
    with pytest.raises(ValueError, match="groups=1 only"):
        fnn.XNORConv2d(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode='zeros' only"):
        fnn.XNORConv2d(4, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="pad_value must be 0 or -1"):
        fnn.XNORConv2d(4, 4, 3, pad_value=1)
    with pytest.raises(ValueError, match="backend must be one of"):
        fnn.XNORConv2d(4, 4, 3, backend="cudnn")
    with pytest.raises(ValueError, match="symmetric padding"):
        fnn.XNORConv2d(4, 4, 2, padding="same")(torch.randn(1, 4, 5, 5))


@pytest.mark.parametrize("pad_value", [0, -1])
def test_torch_backend_bit_identical_with_same_gradients(pad_value):
    torch.manual_seed(1)
    m = fnn.XNORConv2d(70, 9, 3, padding=1, pad_value=pad_value)
    r = fnn.XNORConv2d(70, 9, 3, padding=1, pad_value=pad_value, backend="torch")
    r.load_state_dict(m.state_dict())
    assert r.use_reference and not m.use_reference
    x = torch.randn(2, 70, 8, 8, requires_grad=True)
    out_m, out_r = m(x), r(x)
    assert torch.equal(out_m, out_r)
    g = torch.randn_like(out_m)
    gm = torch.autograd.grad(out_m, (x, m.weight, m.bias), g)
    gr = torch.autograd.grad(out_r, (x, r.weight, r.bias), g)
    # The input gradient is the same GEMM and window on both; the fused CPU backward sums the weight
    # chain (alpha term) and the bias gradient in other orders than the composite: float32 rounding.
    assert torch.equal(gm[0], gr[0])
    for a, b in zip(gm[1:], gr[1:]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(r(x), out_m)
    fnn.set_xnor_backend(r, "fastpose")
    assert not r.use_reference


def test_binary_activation():
    x = torch.tensor([-2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 3.0], requires_grad=True)
    y = fnn.BinaryActivation()(x)
    assert torch.equal(y, torch.tensor([-1.0, -1, -1, 1, 1, 1, 1, 1]))
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, torch.tensor([0.0, 1, 1, 1, 1, 1, 1, 0]))


def test_clip_binary_weights():
    model = nn.Sequential(fnn.XNORConv2d(3, 4, 3), nn.Conv2d(4, 4, 1))
    with torch.no_grad():
        model[0].weight.mul_(10)
        model[1].weight.mul_(10)
    fnn.clip_binary_weights(model, 1.0)
    assert model[0].weight.abs().max() <= 1.0
    assert model[1].weight.abs().max() > 1.0  # real-valued layers untouched


def _model():
    return nn.Sequential(fnn.XNORConv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
                         fnn.XNORConv2d(64, 256, 3, padding=1), nn.BatchNorm2d(256),
                         fnn.XNORConv2d(256, 256, 3, padding=1, pad_value=-1, scale=False)).eval()


def _state_bytes(m):
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    return buf.getbuffer().nbytes


def test_pack_model_same_outputs_and_small_state():
    model = _model()
    x = torch.randn(2, 3, 8, 8)
    packed = fnn.pack(model)
    assert isinstance(model[0], fnn.XNORConv2d)  # a copy was packed
    assert all(isinstance(packed[i], fnn.PackedXNORConv2d) for i in (0, 2, 4))
    with torch.no_grad():
        assert torch.equal(packed(x), model(x))
    conv_bytes = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, fnn.XNORConv2d))
    packed_bytes = sum(m.weight_packed.numel() * 8 for m in packed.modules() if isinstance(m, fnn.PackedXNORConv2d))
    assert conv_bytes / packed_bytes > 25  # 3 input channels pad to a whole word; 64 and 256 pack 32x
    assert _state_bytes(model) / _state_bytes(packed) > 20
    # a fresh packed model loads the state dict
    fresh = fnn.pack(_model())
    fresh.load_state_dict(packed.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    # packed torch backend: plain PyTorch ops, same values
    fnn.set_xnor_backend(fresh, "torch")
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_pack_single_module_and_packed_input():
    m = fnn.XNORConv2d(100, 7, 3, stride=2, padding=1)
    p = fnn.pack(m)
    assert isinstance(p, fnn.PackedXNORConv2d)
    x = torch.randn(1, 100, 9, 9)
    assert torch.equal(p(x), m(x).detach())
    assert torch.equal(p(torch.ops.fastpose.binarize_pack(x)), m(x).detach())
    fresh = fnn.PackedXNORConv2d(100, 7, 3, stride=2, padding=1)
    fresh.load_state_dict(p.state_dict())
    assert torch.equal(fresh(x), p(x))


def test_onnx_export_uses_sign_and_conv():
    onnx = pytest.importorskip("onnx")
    m = nn.Sequential(fnn.XNORConv2d(8, 4, 3, padding=1), fnn.BinaryActivation()).eval()
    x = torch.randn(1, 8, 6, 6)
    buf = io.BytesIO()
    torch.onnx.export(m, (x,), buf, dynamo=False)
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert "Conv" in ops
    assert not any("fastpose" in o for o in ops)


def test_jit_trace_matches():
    m = fnn.XNORConv2d(8, 4, 3, padding=1).eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        t = torch.jit.trace(m, (x,))
        assert torch.equal(t(x), m(x))
    assert torch.equal(binarize(torch.tensor([-0.0, 0.0])), torch.tensor([1.0, 1.0]))
